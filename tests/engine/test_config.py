"""Strict config loading: unknown keys with suggestions, types, bases, overrides, the saved round trip."""

from pathlib import Path

import pytest

from fishertune.engine.config import (
    PACKAGED_CONFIGS,
    config_from_dict,
    load_config,
    parse_override,
    save_config,
)
from fishertune.errors import FisherTuneError


@pytest.mark.parametrize(("raw", "message"), [
    ({"train": {"stpes": 3}}, "unknown config key 'train.stpes' (did you mean 'train.steps'?)"),
    ({"trian": {}}, "unknown config key 'trian' (did you mean 'train'?)"),
    ({"train": {"perturb": {"alfa": 1}}}, "'train.perturb.alfa' (did you mean 'train.perturb.alpha'?)"),
    ({"data": {"batchsize": 2}}, "did you mean 'data.batch_size'?"),
    ({"train": {"schedule": "cosin"}}, "train.schedule must be one of poly, cosine, constant, got 'cosin' "
                                       "(did you mean 'cosine'?)"),
    ({"train": {"steps": "many"}}, "train.steps must be an integer, got 'many'"),
    ({"train": {"amp": "yes"}}, "train.amp must be true or false or one of off, bf16, fp16, got 'yes'"),
    ({"eval": {"window_batch": 0}}, "eval.window_batch must be >= 1, got 0"),
    ({"train": {"activation_checkpointing": True, "perturb": {"enabled": True}}},
     "train.activation_checkpointing cannot be combined with train.perturb"),
    ({"data": {"targets": "folder:x"}}, "data.targets must be a list"),
    ({"model": {"weights": 3}}, "model.weights must be a string or null"),
    ({"train": 5}, "train must be a mapping"),
])
def test_bad_keys_and_values_name_the_key(raw, message):
    with pytest.raises(FisherTuneError) as error:
        config_from_dict(raw)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_types_are_coerced_only_where_safe():
    config = config_from_dict({"train": {"lr": "1e-4", "head_lr": 1,
                                         "perturb": {"layers": [0, "backbone.x"]}}})
    assert config.train.lr == 1e-4 and isinstance(config.train.head_lr, float)
    assert config.train.perturb.layers == [0, "backbone.x"]
    assert config_from_dict({}).train.steps == 1000  # defaults fill what a file leaves out
    # precision: YAML's off/false and true map to the modes; eval follows train unless it says
    assert [config_from_dict({"train": {"amp": v}}).train.amp for v in (False, True, "fp16")] == \
        ["off", "bf16", "fp16"]
    assert config_from_dict({}).train.amp == "off" and config_from_dict({}).eval.amp is None


def test_parse_override_reads_yaml_values():
    assert parse_override("train.lr=2e-5") == {"train": {"lr": 2e-5}}  # a number, as in YAML 1.2
    assert parse_override("method.options.ratio=5E-2") == {"method": {"options": {"ratio": 0.05}}}
    assert parse_override("data.targets=[folder:a, b:c]") == {"data": {"targets": ["folder:a", "b:c"]}}
    assert parse_override("train.amp=false") == {"train": {"amp": False}}
    with pytest.raises(FisherTuneError, match="--set expects key.sub=value"):
        parse_override("train.lr")


def test_bases_compose_in_order_and_overrides_win(tmp_path: Path):
    (tmp_path / "protocol.yaml").write_text("data: {train: 'folder:src', batch_size: 4}\n"
                                            "train: {steps: 50}\n")
    (tmp_path / "method.yaml").write_text("method: {name: lora, options: {rank: 4}}\ntrain: {lr: 1e-3}\n")
    (tmp_path / "run.yaml").write_text("base: [protocol.yaml, method.yaml]\ntrain: {steps: 70}\n")
    config = load_config(tmp_path / "run.yaml", ["train.lr=5e-4", "method.options.rank=8"])
    assert config.data.train == "folder:src" and config.data.batch_size == 4
    assert config.train.steps == 70 and config.train.lr == 5e-4
    assert config.method.name == "lora" and config.method.options == {"rank": 8}


def test_changing_the_method_drops_the_previous_methods_options(tmp_path: Path):
    (tmp_path / "method.yaml").write_text("method: {name: lora, options: {rank: 4}}\n")
    (tmp_path / "run.yaml").write_text("base: method.yaml\nmethod: {name: full}\n")
    assert load_config(tmp_path / "run.yaml").method.options == {}
    assert load_config(tmp_path / "method.yaml", ["method.name=frozen"]).method.options == {}


def test_unknown_key_in_a_base_is_reported(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("train: {setps: 3}\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\n")
    with pytest.raises(FisherTuneError, match="did you mean 'train.steps'"):
        load_config(tmp_path / "run.yaml")


def test_missing_file_and_cycles(tmp_path: Path):
    with pytest.raises(FisherTuneError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(FisherTuneError, match="includes itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(FisherTuneError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_saved_config_loads_back_equal(tmp_path: Path):
    config = config_from_dict({"train": {"lr": 3e-5, "perturb": {"enabled": True}},
                               "data": {"targets": ["mapillary:y:val"]}})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    # the saved config records the default split and label table the numbers use
    assert config.data.targets == ["mapillary:y:validation:robustnet"]


def test_dataset_specs_are_checked_when_the_config_loads():
    with pytest.raises(FisherTuneError, match=r"data.targets\[1\]: unknown dataset 'kitti'"):
        config_from_dict({"data": {"targets": ["folder:a", "kitti:b"]}})
    with pytest.raises(FisherTuneError, match="data.train is an empty list"):
        config_from_dict({"data": {"train": []}})
    config = config_from_dict({"data": {"train": ["gtav:g", "synthia:s:all:16"], "sampling": "equal"}})
    assert config.data.train == ["gtav:g:all", "synthia:s:all:16"]


RUN_CONFIGS = [path for pattern in ("*.yaml", "protocols/*.yaml", "methods/*.yaml", "backbones/*.yaml")
               for path in PACKAGED_CONFIGS.glob(pattern)]


@pytest.mark.parametrize("path", sorted(RUN_CONFIGS), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_is_valid(path):
    """The schema accepts it, and the method's options are valid for that tuner's own config class."""
    from fishertune.tuners import TUNERS
    from fishertune.tuners.base import make_config

    config = load_config(path)
    make_config(TUNERS[config.method.name].config_class, config.method.options)


# YAML as a user means it (YAML 1.2 core schema), refusing what YAML 1.1 would read silently wrong
@pytest.mark.parametrize(("text", "value"), [
    ("off", "off"), ("on", "on"), ("no", "no"), ("yes", "yes"),  # strings, as the docs write the options
    ("true", True), ("False", False), ("010", 10), ("0o10", 8), ("0x1f", 31), ("-3", -3), ("5e-2", 0.05),
    ("1.5", 1.5), ("~", None), ("null", None), ("'010'", "010")])
def test_yaml_scalars_follow_yaml_1_2(text, value):
    from fishertune.engine.config import load_yaml

    assert load_yaml(f"x: {text}") == {"x": value}
    assert parse_override(f"a.b={text}") == {"a": {"b": value}}


def test_the_documented_option_value_works_on_the_command_line(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("base: [protocols/synthetic.yaml, backbones/tiny.yaml, methods/fishertune.yaml]\n")
    config = load_config(path, ["method.options.variational=off", "train.seed=010"])
    assert config.method.options["variational"] == "off" and config.train.seed == 10


@pytest.mark.parametrize(("text", "message"), [
    ("train:\n  seed: 1\n  seed: 2\n", "key 'seed' is given twice (line 3)"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", "expands to more than 100,000 values"),
])
def test_duplicate_keys_and_alias_bombs_are_refused_in_one_line(tmp_path: Path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(FisherTuneError) as error:
        load_config(path)
    assert message in str(error.value) and "\n" not in str(error.value) and len(str(error.value)) < 300


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_numpy_cannot_take_is_refused_when_the_config_loads(seed):
    with pytest.raises(FisherTuneError, match="train.seed"):
        config_from_dict({"train": {"seed": seed}})
    assert config_from_dict({"train": {"seed": 2**32 - 1}}).train.seed == 2**32 - 1
