"""The sparse core's option strings: Literal types, checked in one place (`check_option`) when the API is
called, and by the config validation (with a nearest-name hint) when they come from a run config."""

import typing

import pytest
import torch

from fishertune import MaskSelectorConfig, select_topk
from fishertune.errors import InputError, UsageError
from fishertune.sparse import options
from fishertune.sparse.dr_fim import normalize_term
from fishertune.validation import from_dict


def test_check_option():
    assert options.check_option("rank", options.Normalization, "normalize") == "rank"
    with pytest.raises(UsageError) as error:
        options.check_option("max", options.Normalization, "normalize", where="Somewhere")
    assert str(error.value) == ("Somewhere: unknown normalize 'max'; "
                                "choose one of none, mean, per_tensor, rank")


def test_the_config_fields_carry_the_option_types():
    hints = typing.get_type_hints(MaskSelectorConfig)
    expected = {"score": ("dr_fim", "fim", "delta_f", "random"),
                "normalize": ("none", "mean", "per_tensor", "rank"),
                "domain_weight": ("paper", "sample", "abs_mean"), "variational": ("off", "ivon", "vogn"),
                "granularity": ("element", "row", "tensor"), "scope": ("global", "per_tensor")}
    assert {name: typing.get_args(hints[name]) for name in expected} == expected


def test_api_calls_with_an_unknown_option_are_usage_errors():
    with pytest.raises(UsageError, match=r"^MaskSelectorConfig: unknown score 'fish'; choose one of "
                                         r"dr_fim, fim, delta_f, random$"):
        MaskSelectorConfig(score="fish")
    with pytest.raises(UsageError, match="unknown granularity 'col'"):
        select_topk({"w": torch.ones(4)}, ratio=0.5, granularity="col")
    with pytest.raises(UsageError, match="unknown DR-FIM normalize 'max'"):
        normalize_term(torch.ones(3), "max")


def test_config_values_are_checked_before_the_method_with_a_hint():
    with pytest.raises(InputError) as error:
        from_dict(MaskSelectorConfig, {"normalize": "rnak"}, "method.options")
    assert str(error.value) == ("method.options.normalize must be one of none, mean, per_tensor, rank, "
                                "got 'rnak' (did you mean 'rank'?)")
    assert from_dict(MaskSelectorConfig, {"scope": "per_tensor"}, "method.options").scope == "per_tensor"


def test_an_option_saved_under_its_old_name_is_read_under_the_new_one():
    """`selection` is the old name of `score` (run folders and records written before 0.1.1 hold it)."""
    with pytest.warns(FutureWarning, match=r"^method.options.selection is now called method.options.score"):
        config = from_dict(MaskSelectorConfig, {"selection": "fim", "ratio": 0.1}, "method.options")
    assert config.score == "fim" and config.ratio == 0.1
    with pytest.raises(InputError, match="selection is the old name of method.options.score: give only"):
        from_dict(MaskSelectorConfig, {"selection": "fim", "score": "dr_fim"}, "method.options")
    with pytest.raises(InputError, match="unknown config key 'method.options.selected'"):
        from_dict(MaskSelectorConfig, {"selected": "fim"}, "method.options")
