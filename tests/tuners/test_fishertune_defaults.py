"""FisherTune's shipped defaults live in its tuner: the method yaml sets only what a protocol changes, the
demo runs the tuner as shipped, and the estimates stay a small part of a real protocol's training."""

import dataclasses
import warnings

import pytest
import yaml

from fishertune.engine.build import method_options
from fishertune.engine.config import PACKAGED_CONFIGS, load_config
from fishertune.sparse.mask_selector import estimate_count, passes_per_estimate
from fishertune.tuners.base import make_config
from fishertune.tuners.fishertune import SHIPPED, FisherTuneTunerConfig

PROTOCOLS = sorted(p.name for p in (PACKAGED_CONFIGS / "protocols").glob("*.yaml") if p.stem != "synthetic")


def test_the_tuner_owns_the_shipped_defaults():
    shipped = FisherTuneTunerConfig()
    assert {k: getattr(shipped, k) for k in SHIPPED} == SHIPPED
    assert shipped.ratio == 0.05 and shipped.exclude == ["*embeddings*"]
    assert shipped.growth_start and shipped.growth_fraction and shipped.update_fraction
    method_yaml = yaml.safe_load((PACKAGED_CONFIGS / "methods" / "fishertune.yaml").read_text())
    assert "options" not in method_yaml["method"]  # only learning rates and the perturbation
    plan = yaml.safe_load((PACKAGED_CONFIGS / "demo" / "plan.yaml").read_text())
    assert "options" not in plan["variants"]["fishertune"]  # the benchmark runs FisherTune as shipped


def test_budget_is_the_one_size_and_the_old_names_still_load():
    shipped = FisherTuneTunerConfig()
    assert (shipped.budget, shipped.ratio, shipped.count) == (0.05, 0.05, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a saved config (every field) loads without a warning
        saved = make_config(FisherTuneTunerConfig, dataclasses.asdict(FisherTuneTunerConfig(budget=300)),
                            "fishertune")
    assert (saved.budget, saved.ratio, saved.count) == (300, None, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tuner config saved before 0.1.1 (budget null, ratio set) too
        old = make_config(FisherTuneTunerConfig, {"budget": None, "ratio": 0.1}, "fishertune")
    assert (old.budget, old.ratio, old.count) == (0.1, 0.1, None)
    with pytest.warns(FutureWarning, match="method.options.selection is now called method.options.score"):
        assert make_config(FisherTuneTunerConfig, {"selection": "fim"}, "fishertune").score == "fim"


def test_a_run_config_that_sets_the_old_size_option_is_warned(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"base": ["protocols/gtav_to_cityscapes_bdd_mapillary.yaml",
                                             "backbones/dinov2_l.yaml", "methods/fishertune.yaml"]}))
    with pytest.warns(FutureWarning, match=r"method.options.ratio: set method.options.budget instead"):
        options = method_options(load_config(path, ["method.options.ratio=0.1"]))
    assert make_config(FisherTuneTunerConfig, options, "fishertune").budget == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method_options(load_config(path, ["method.options.budget=0.1"]))


@pytest.mark.parametrize("overrides, layers", [
    (["train.perturb.layers=[3]"], [3]),
    (["train.perturb.layers=[3]", "method.options.perturb_layers=[1]"], [1])])
def test_the_domain_term_perturbs_the_layers_training_perturbs(tmp_path, overrides, layers):
    """One name for the DSU perturbation's layers: train.perturb.layers, unless the method sets its own."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"base": ["protocols/gtav_to_cityscapes_bdd_mapillary.yaml",
                                             "backbones/dinov2_l.yaml", "methods/fishertune.yaml"]}))
    assert method_options(load_config(path, overrides))["perturb_layers"] == layers


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_estimates_cost_at_most_5_percent_of_a_real_protocols_training(protocol, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"base": [f"protocols/{protocol}", "backbones/dinov2_l.yaml",
                                             "methods/fishertune.yaml"]}))
    config = load_config(path)
    t = config.train
    shipped = FisherTuneTunerConfig(**config.method.options)
    estimates = estimate_count(shipped, t.steps)
    passes = estimates * passes_per_estimate(shipped, t.prepare_batches)
    assert estimates == 4  # prepare's, then a re-estimate every quarter of the steps (none after the last)
    assert passes / (t.steps * t.grad_accum) <= 0.05
