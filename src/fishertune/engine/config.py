"""Run configuration: YAML files validated strictly against a schema of dataclasses.

A config file may name `base:` files (one or a list) that it extends: protocol x method x backbone
compose as

    base: [protocols/gtav_to_cityscapes_bdd_mapillary.yaml, methods/fishertune.yaml, backbones/dinov2_l.yaml]
    train: {steps: 20000}

Bases are merged in order (later wins, dictionaries merge key by key), then the file's own keys, then
`--set section.key=value` overrides (values parsed as YAML). A base path is looked up next to the file
first, then among the configs shipped in `fishertune/configs/`. When a later layer changes `method.name`,
the earlier layers' `method.options` are dropped, because options belong to one method.

Every key is checked: an unknown or mistyped key is one error naming it and the nearest valid key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fishertune.errors import FisherTuneError

PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ModelConfig:
    backbone: str = "dinov2"
    """Backbone registry name (see `fishertune.models.build_backbone`)."""
    weights: str | None = None
    """Hub id, local save_pretrained folder, .safetensors file or Meta's DINOv2 .pth; None = random init."""
    weights_sha256: str | None = None
    """sha256 of the weights file; when set, a file with another hash is refused before it is loaded."""
    backbone_config: dict = field(default_factory=dict)
    """Overrides of the backbone's transformers config (e.g. a tiny test model)."""
    out_indices: list[int] | None = None
    """Blocks whose features feed the head; None = the backbone's default."""
    head: str = "linear"
    """Decode head: linear | multilevel | mask2former."""
    head_options: dict = field(default_factory=dict)
    """Keyword arguments of the head."""


@dataclass
class MethodConfig:
    name: str = "fishertune"
    """Tuner registry name (`fishertune.tuners.TUNERS`: full, frozen, lora, rein, fishertune, ...)."""
    options: dict = field(default_factory=dict)
    """Keyword options of the tuner, validated by the tuner itself."""


@dataclass
class DataConfig:
    train: str | list[str] = ""
    """Source training data: one SPEC (folder:PATH or <dataset>:ROOT[:split[:option]]) or a list of them,
    concatenated (multi-source training, e.g. GTAV + SYNTHIA)."""
    sampling: Literal["proportional", "equal"] = "proportional"
    """How several training sources are drawn: proportional to their sizes (every image once per epoch), or
    equally (each source fills the same share; smaller ones are repeated)."""
    val: str | None = None
    """Source validation: a SPEC, or holdout:N (N images, or a fraction, of the training sources kept out of
    training by a fixed-seed draw; see docs/datasets.md). The only data used for model selection."""
    targets: list[str] = field(default_factory=list)
    """Unseen target-domain SPECs evaluated after training."""
    crop: int | None = None
    """Training crop size in pixels (square); None = full images (they must share one size)."""
    augment: dict = field(default_factory=dict)
    """Options of the training augmentation `fishertune.data.transforms.TrainTransform` used with a crop:
    scale_range, base_short_side, flip_prob, jitter."""
    batch_size: int = 8
    """Global batch size (split evenly over the processes of a distributed run)."""
    workers: int = 0
    """DataLoader worker processes per training process."""
    classes: list[str] | dict | None = None
    """Class set of folder: datasets: a list of names, or {names, palette, ignore_index}; None = the
    Cityscapes 19 classes (see `fishertune.data.classes`)."""


@dataclass
class PerturbConfig:
    enabled: bool = False
    """Apply the DSU-style feature-statistics perturbation during training."""
    alpha: float = 1.0
    """Perturbation strength."""
    layers: list[int | str] = field(default_factory=lambda: [0, 1])
    """Backbone block indices or module names the perturbation attaches to."""


@dataclass
class TrainConfig:
    steps: int = 1000
    """Optimiser steps of tuning (after the head warm-up)."""
    warmup_steps: int = 0
    """Optimiser steps that train the head only, backbone frozen, before the tuner's prepare."""
    prepare_batches: int = 4
    """Source batches handed to the tuner's prepare/after_step (e.g. Fisher estimation)."""
    lr: float = 1e-4
    """Learning rate of the tuned backbone parameters."""
    head_lr: float = 1e-3
    """Learning rate of the decode head."""
    weight_decay: float = 0.01
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    """Learning-rate decay after the linear warm-up: poly (power 0.9), cosine or constant."""
    lr_warmup: int = 0
    """Steps of linear learning-rate warm-up at the start of tuning."""
    grad_accum: int = 1
    """Micro-batches whose gradients are summed per optimiser step."""
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    eval_every: int = 0
    """Evaluate on the source validation set every N steps (0 = only at the end)."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N steps (0 = only at the end)."""
    log_every: int = 10
    """Write a log record every N steps."""
    seed: int = 0
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""


@dataclass
class EvalConfig:
    mode: Literal["whole", "slide"] = "whole"
    """Whole-image or sliding-window inference."""
    crop: int | None = None
    """Sliding-window size (default: data.crop)."""
    stride: int | None = None
    """Sliding-window stride (default: two thirds of the window)."""
    batch_size: int = 1


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- loading --------------------------------------------------------------------------------------------


def load_config(path: str | Path | list[str | Path], overrides: list[str] = ()) -> Config:
    """Read `path` (with its bases; several paths are merged in order, like a list of bases), apply `--set`
    overrides, validate, and return the Config."""
    raw: dict = {}
    for one in path if isinstance(path, (list, tuple)) else [path]:
        raw = _merge(raw, _read_composed(_find_config(one), seen=()))
    for override in overrides:
        raw = _merge(raw, parse_override(override))
    return config_from_dict(raw)


def config_from_dict(raw: dict) -> Config:
    """Validate a plain dictionary against the schema (strict: unknown keys and wrong types are errors).
    Dataset specs are checked and written out with their defaults (see `canonical_specs`)."""
    config = _build(Config, raw, "")
    canonical_specs(config.data)
    return config


def canonical_specs(data: DataConfig) -> None:
    """Check every dataset spec of `data` (without touching the disk) and write out its default split and
    option, so a saved config records e.g. which Mapillary label table its numbers use. `data.val` may
    instead be `holdout:N` (a slice of the training sources, see `fishertune.data.specs.HoldOut`)."""
    from fishertune.data.specs import canonical, canonical_val

    def fix(spec: str, where: str, form=canonical) -> str:
        try:
            return form(spec)
        except FisherTuneError as error:
            raise FisherTuneError(f"{where}: {error}") from None

    if isinstance(data.train, list):
        if not data.train:
            raise FisherTuneError("data.train is an empty list: give at least one SPEC")
        data.train = [fix(spec, f"data.train[{i}]") for i, spec in enumerate(data.train)]
    elif data.train:
        data.train = fix(data.train, "data.train")
    if data.val:
        data.val = fix(data.val, "data.val", canonical_val)
    data.targets = [fix(spec, f"data.targets[{i}]") for i, spec in enumerate(data.targets)]


def save_config(config: Config, path: str | Path) -> None:
    from fishertune.atomic import write_text

    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def parse_override(text: str) -> dict:
    """'train.lr=1e-4' -> {'train': {'lr': 1e-4}} (the value is parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise FisherTuneError(f"--set expects key.sub=value, got {text!r}")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise FisherTuneError(f"--set {key}: {value!r} is not valid YAML ({_first_line(error)})") from None
    for part in reversed(key.strip().split(".")):
        parsed = {part: parsed}
    return parsed


def _find_config(path: str | Path, relative_to: Path | None = None) -> Path:
    path = Path(path)
    candidates = [path] if path.is_absolute() else [
        *([relative_to / path] if relative_to else []), path, PACKAGED_CONFIGS / path]
    candidates += [c.with_name(c.name + ".yaml") for c in candidates if c.suffix != ".yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FisherTuneError(f"config file not found: {path}")


def _read_composed(path: Path, seen: tuple[Path, ...]) -> dict:
    if path in seen:
        raise FisherTuneError(f"config {path} includes itself through its bases")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise FisherTuneError(f"config {path} is not valid YAML: {_first_line(error)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise FisherTuneError(f"config {path} must be a mapping of sections, got {type(raw).__name__}")
    bases = raw.pop("base", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise FisherTuneError(f"config {path}: 'base' must be a file name or a list of file names")
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, _read_composed(_find_config(base, path.parent), (*seen, path)))
    return _merge(merged, raw)


def _merge(base: dict, update: dict) -> dict:
    """Recursive merge, `update` wins; a changed method.name drops the earlier method.options."""
    out = copy.deepcopy(base)
    method = update.get("method")
    if isinstance(method, dict) and "name" in method and isinstance(out.get("method"), dict) \
            and out["method"].get("name") != method["name"]:
        out["method"].pop("options", None)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise FisherTuneError(f"{where or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise FisherTuneError(f"unknown config key {name!r}{_suggest(str(key), fields, where)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value, name)
        else:
            values[key] = _check(value, hint, name)
    return cls(**values)


def _suggest(key: str, valid: typing.Iterable[str], where: str) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    prefix = f"{where}." if where else ""
    if close:
        return f" (did you mean {prefix + close[0]!r}?)"
    return f"; valid keys{' in ' + where if where else ''}: {', '.join(valid)}"


def _check(value: Any, hint: Any, name: str) -> Any:
    """Return `value` if it fits the type `hint` (floats also accept ints and numeric strings)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _check(value, option, name)
            except FisherTuneError:
                continue
        raise FisherTuneError(f"{name} must be {_describe(hint)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.5)
        hint_text = f" (did you mean {close[0]!r}?)" if close else ""
        raise FisherTuneError(f"{name} must be one of {', '.join(map(str, args))}, got {value!r}{hint_text}")
    if origin is list:
        if not isinstance(value, list):
            raise FisherTuneError(f"{name} must be a list, got {value!r}")
        return [_check(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)] if args else value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise FisherTuneError(f"{name} must be a mapping, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str and isinstance(value, str):
        return value
    raise FisherTuneError(f"{name} must be {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args) + (" or null" if len(args) < len(typing.get_args(hint))
                                                           else "")
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(args[0])}" if args else "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    return names.get(hint, str(hint))


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
