"""Run configuration: YAML files validated strictly against a schema of dataclasses.

A config file may name `base:` files (one or a list) that it extends: protocol x method x backbone
compose as

    base: [protocols/gtav_to_cityscapes_bdd_mapillary.yaml, methods/fishertune.yaml, backbones/dinov2_l.yaml]
    train: {steps: 20000}

Bases are merged in order (later wins, dictionaries merge key by key), then the file's own keys, then
`--set section.key=value` overrides (values parsed as YAML). A base path is looked up next to the file
first, then among the configs shipped in `fishertune/configs/`. When a later layer changes `method.name`,
the earlier layers' `method.options` are dropped, because options belong to one method.

Every key is checked (`fishertune.validation.from_dict`): an unknown or mistyped key is one error naming
it and the nearest valid key; every value must have the field's type and lie in its range (the
`metadata` of the field: `at_least(1)` means >= 1). YAML is read with the YAML 1.2 rule for numbers, so
`5e-2` is the number 0.05 (PyYAML alone reads it as a string).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from fishertune.atomic import write_text
from fishertune.data.image_io import MAX_PIXELS
from fishertune.data.specs import DatasetSpec, HoldOut, canonical, canonical_val
from fishertune.engine.precision import amp_mode
from fishertune.errors import FisherTuneError, InputError
from fishertune.validation import at_least, between, from_dict

PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MAX_LR = 1e30  # lr / (1 − β1) must stay below float32's largest value (3.4e38)


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
    crop: int | None = field(default=None, metadata=at_least(1))
    """Training crop size in pixels (square); None = full images (they must share one size). At most the
    image size limit: crop x crop <= data.max_pixels (50 megapixels by default, a 7071-pixel square)."""
    augment: dict = field(default_factory=dict)
    """Options of the training augmentation `fishertune.data.transforms.TrainTransform` used with a crop:
    scale_range, base_short_side, flip_prob, jitter."""
    batch_size: int = field(default=8, metadata=at_least(1))
    """Global batch size (split evenly over the processes of a distributed run)."""
    workers: int = field(default=0, metadata=at_least(0))
    """DataLoader worker processes per training process."""
    classes: list[str] | dict | None = None
    """Class set of folder: datasets: a list of names, or {names, palette, ignore_index}; None = the
    Cityscapes 19 classes (see `fishertune.data.classes`)."""
    max_pixels: int | None = field(default=None, metadata=at_least(1))
    """Largest image (width x height) read; larger files are refused by name before they are decoded.
    None = 50 megapixels (`fishertune.data.image_io.MAX_PIXELS`)."""

    @property
    def sources(self) -> list[str]:
        """The training SPECs as a list (`train` holds one SPEC or a list)."""
        return list(self.train) if isinstance(self.train, list) else [self.train] if self.train else []


@dataclass
class PerturbConfig:
    enabled: bool = False
    """Apply the DSU-style feature-statistics perturbation during training."""
    alpha: float = field(default=1.0, metadata=at_least(0))
    """Perturbation strength."""
    layers: list[int | str] = field(default_factory=lambda: [0, 1])
    """Backbone block indices or module names the perturbation attaches to."""


@dataclass
class TrainConfig:
    steps: int = field(default=1000, metadata=at_least(0))
    """Optimiser steps of tuning (after the head warm-up)."""
    warmup_steps: int = field(default=0, metadata=at_least(0))
    """Optimiser steps that train the head only, backbone frozen, before the tuner's prepare."""
    prepare_batches: int = field(default=4, metadata=at_least(1))
    """Source batches handed to the tuner's prepare/after_step (e.g. Fisher estimation)."""
    lr: float = field(default=1e-4, metadata=between(0, MAX_LR))
    """Learning rate of the tuned backbone parameters (at most 1e30: beyond it AdamW's step size overflows
    float32)."""
    head_lr: float = field(default=1e-3, metadata=between(0, MAX_LR))
    """Learning rate of the decode head (at most 1e30, as lr)."""
    weight_decay: float = field(default=0.01, metadata=at_least(0))
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    """Learning-rate decay after the linear warm-up: poly (power 0.9), cosine or constant."""
    lr_warmup: int = field(default=0, metadata=at_least(0))
    """Steps of linear learning-rate warm-up at the start of tuning."""
    grad_accum: int = field(default=1, metadata=at_least(1))
    """Micro-batches whose gradients are summed per optimiser step."""
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    eval_every: int = field(default=0, metadata=at_least(0))
    """Evaluate on the source validation set every N steps (0 = only at the end)."""
    checkpoint_every: int = field(default=0, metadata=at_least(0))
    """Save a resumable checkpoint every N steps (0 = only at the end)."""
    log_every: int = field(default=10, metadata=at_least(1))
    """Write a log record every N steps."""
    seed: int = field(default=0, metadata=between(0, 2**32 - 1))
    """Seed of every random choice of the run (numpy's seeds are 32-bit)."""
    amp: bool | Literal["off", "bf16", "fp16"] = "off"
    """Mixed precision of training, on CPU and CUDA: off (float32), bf16 or fp16 autocast (fp16 with loss
    scaling). false = off, true = bf16."""
    activation_checkpointing: bool = False
    """Recompute each backbone block's activations in the backward pass instead of keeping them (less
    memory, about one more forward pass of time)."""

    def __post_init__(self) -> None:
        self.amp = amp_mode(self.amp)
        if self.warmup_steps + self.steps < 1:
            raise InputError("train.warmup_steps + train.steps must be at least 1 (nothing would train)")
        if self.activation_checkpointing and self.perturb.enabled:
            raise InputError("train.activation_checkpointing cannot be combined with train.perturb: the "
                             "recomputed forward pass would draw other perturbations than the first")


@dataclass
class EvalConfig:
    mode: Literal["whole", "slide"] = "whole"
    """Whole-image or sliding-window inference."""
    crop: int | None = field(default=None, metadata=at_least(1))
    """Sliding-window size (default: data.crop); crop x crop <= data.max_pixels, like data.crop."""
    stride: int | None = field(default=None, metadata=at_least(1))
    """Sliding-window stride (default: two thirds of the window)."""
    batch_size: int = field(default=1, metadata=at_least(1))
    window_batch: int = field(default=8, metadata=at_least(1))
    """Sliding windows per forward pass (same scores as one at a time, up to float rounding)."""
    flip: bool = False
    """Test-time augmentation: average the scores of each image and its mirror image."""
    amp: bool | Literal["off", "bf16", "fp16"] | None = None
    """Mixed precision of evaluation: off, bf16 or fp16 (default: train.amp)."""

    def __post_init__(self) -> None:
        self.amp = None if self.amp is None else amp_mode(self.amp)
        if self.crop is not None and self.stride is not None and self.stride > self.crop:
            raise InputError(f"eval.stride {self.stride} is larger than eval.crop {self.crop}: the windows "
                             f"would leave pixels unpredicted")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        for where, crop in (("data.crop", self.data.crop), ("eval.crop", self.eval.crop)):
            check_crop(crop, where, self.data.max_pixels)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_crop(crop: int | None, where: str, max_pixels: int | None = None) -> None:
    """Refuse a square crop (or window) with more pixels than the largest image the loaders read
    (`max_pixels`, default `fishertune.data.image_io.MAX_PIXELS`): beyond it a crop is padding only, and
    its batch cannot be allocated (data.crop: 100000 asks for 120 GB)."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if crop is not None and crop * crop > limit:
        raise InputError(f"{where} {crop} is too large: a {crop}x{crop} crop has {crop * crop / 1e6:g} "
                         f"megapixels, over the image size limit of {limit / 1e6:g} (data.max_pixels); use a "
                         f"smaller crop")


# -- loading --------------------------------------------------------------------------------------------


def load_config(path: str | Path | list[str | Path], overrides: list[str] = ()) -> Config:
    """Read `path` (with its bases; several paths are merged in order, like a list of bases), apply `--set`
    overrides, validate, and return the Config."""
    raw: dict = {}
    for one in path if isinstance(path, (list, tuple)) else [path]:
        raw = merge_config(raw, _read_composed(_find_config(one), seen=()))
    for override in overrides:
        raw = merge_config(raw, parse_override(override))
    return config_from_dict(raw)


def config_from_dict(raw: dict) -> Config:
    """Validate a plain dictionary against the schema (strict: unknown keys, wrong types and values out of
    range are errors). Dataset specs are checked and written out with their defaults (see
    `canonical_specs`)."""
    config = from_dict(Config, raw)
    canonical_specs(config.data)
    return config


def canonical_specs(data: DataConfig) -> None:
    """Check every dataset spec of `data` (without touching the disk) and write out its default split and
    option, so a saved config records e.g. which Mapillary label table its numbers use. `data.val` may
    instead be `holdout:N` (a slice of the training sources, see `fishertune.data.specs.HoldOut`)."""
    def fix(spec: str, where: str) -> str:
        try:
            return (canonical_val if where == "data.val" else canonical)(spec)
        except FisherTuneError as error:
            raise InputError(f"{where}: {error}") from None

    if data.train == []:
        raise InputError("data.train is an empty list: give at least one SPEC")
    map_specs(data, fix)


def map_specs(data: DataConfig, convert) -> None:
    """Replace every dataset spec of `data` by convert(spec, where) (where: e.g. "data.targets[0]"), keeping
    `data.train`'s form (one SPEC or a list)."""
    if isinstance(data.train, list):
        data.train = [convert(spec, f"data.train[{i}]") for i, spec in enumerate(data.train)]
    elif data.train:
        data.train = convert(data.train, "data.train")
    if data.val:
        data.val = convert(data.val, "data.val")
    data.targets = [convert(spec, f"data.targets[{i}]") for i, spec in enumerate(data.targets)]


def with_absolute_paths(config: Config) -> Config:
    """The config as a run folder records it: relative dataset roots, and a base weights file or folder
    that exists here, made absolute (against the current folder), so that `eval RUN`, `predict RUN` and
    the run's exports find them from any folder. Hub ids and absolute paths are left as they are."""
    def absolute(spec: str) -> str:
        if HoldOut.parse(spec) is not None:
            return spec
        parsed = DatasetSpec.parse(spec)
        return str(dataclasses.replace(parsed, root=parsed.root.expanduser().absolute()))

    config = copy.deepcopy(config)
    map_specs(config.data, lambda spec, _: absolute(spec))
    weights = config.model.weights
    if weights and not Path(weights).expanduser().is_absolute() and Path(weights).expanduser().exists():
        config.model.weights = str(Path(weights).expanduser().absolute())
    return config


class YamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader with YAML 1.2's core schema for scalars and two guards:
    - booleans are only true/false (`variational: off` is the string "off", as the docs write it), integers
      are decimal unless written 0o/0x (`seed: 010` is 10), and exponent numbers without a dot (`5e-2`) are
      floats;
    - a key given twice in one mapping is refused (YAML 1.1 keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict)):
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a name, not a {type(key).__name__}", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


YamlLoader.yaml_implicit_resolvers = {  # YAML 1.1's bool and int resolvers replaced by 1.2 core's
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag, _pattern, _first in (
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("tag:yaml.org,2002:float", r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$", "-+0123456789")):
    YamlLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _yaml12_int(loader: YamlLoader, node) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text, 10)  # leading zeros are decimal (YAML 1.2), not octal


YamlLoader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)
YAML_MAX_NODES = 100_000
"""The most values a config may expand to (anchors and aliases included): a few kilobytes of aliases can
otherwise expand to gigabytes ("billion laughs")."""


def load_yaml(text: str):
    """Parse YAML text safely (no Python tags) with YAML 1.2's core schema (YamlLoader), refusing a document
    that expands to more than YAML_MAX_NODES values."""
    value = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - YamlLoader is a SafeLoader
    _check_size(value)
    return value


def read_yaml(path: Path, what: str):
    """The YAML file `path` parsed by load_yaml; an unreadable, non-UTF-8 or invalid file is one InputError
    naming it as `what` (e.g. "config")."""
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason})") from None
    except OSError as error:
        raise InputError(f"cannot read {what} {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise InputError(f"{what} {path} is not valid YAML: {_first_line(error)}") from None


def _check_size(value) -> None:
    stack, count = [value], 0
    while stack:
        item = stack.pop()
        count += 1
        if count > YAML_MAX_NODES:
            raise yaml.YAMLError(f"the document expands to more than {YAML_MAX_NODES:,} values "
                                 "(repeated aliases?)")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def save_config(config: Config, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def parse_override(text: str) -> dict:
    """'train.lr=1e-4' -> {'train': {'lr': 1e-4}} (the value is parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set expects key.sub=value, got {text!r}")
    try:
        parsed = load_yaml(value)
    except yaml.YAMLError as error:
        raise InputError(f"--set {key}: {value!r} is not valid YAML ({_first_line(error)})") from None
    for part in reversed(key.strip().split(".")):
        parsed = {part: parsed}
    return parsed


def _find_config(path: str | Path, relative_to: Path | None = None) -> Path:
    path = Path(path)
    candidates = [path] if path.is_absolute() else [
        *([relative_to / path] if relative_to else []), path, PACKAGED_CONFIGS / path]
    candidates += [c.with_name(c.name + ".yaml") for c in candidates if c.suffix != ".yaml" and c.name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"config file not found: {path}")


def _read_composed(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve()  # `../x/../x.yaml` and `x.yaml` are one file, so a cycle is always found
    if path in seen:
        chain = " -> ".join(p.name for p in (*seen[seen.index(path):], path))
        raise InputError(f"config {path} includes itself through its bases ({chain})")
    raw = read_yaml(path, "config")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise InputError(f"config {path} must be a mapping of sections, got {type(raw).__name__}")
    bases = raw.pop("base", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise InputError(f"config {path}: 'base' must be a file name or a list of file names")
    merged: dict = {}
    for base in bases:
        merged = merge_config(merged, _read_composed(_find_config(base, path.parent), (*seen, path)))
    return merge_config(merged, raw)


def merge_config(base: dict, update: dict) -> dict:
    """Recursive merge, `update` wins; a changed method.name drops the earlier method.options."""
    out = copy.deepcopy(base)
    method = update.get("method")
    if isinstance(method, dict) and "name" in method and isinstance(out.get("method"), dict) \
            and out["method"].get("name") != method["name"]:
        out["method"].pop("options", None)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _first_line(error: Exception) -> str:
    """The error's first line, with the line number where YAML says where (one short line, never a dump
    of the document)."""
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    mark = getattr(error, "problem_mark", None)
    if getattr(error, "problem", None):
        text = error.problem[:300]
    return f"{text} (line {mark.line + 1})" if mark is not None else text
