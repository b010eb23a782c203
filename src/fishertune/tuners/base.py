"""The one interface every fine-tuning method implements, so the trainer drives them all alike.

Lifecycle, as the engine's trainer runs it:

    tuner = build_tuner("rein", segmentor, **options)   # may add modules to segmentor.backbone
    # warm-up: the trainer trains the head only (all backbone parameters frozen)
    tuner.prepare(batches, loss_fn)                      # one-off work, e.g. Fisher scores and masks
    optimizer = tuner.build_optimizer(lr=..., head_lr=..., weight_decay=...)
    for step in range(steps):
        loss.backward(); optimizer.step()
        tuner.after_step(step, steps, batches, loss_fn, optimizer)   # e.g. mask growth
    tuner.save_pretrained(dir)                           # only what the method changed
    tuner = load_tuner(dir, fresh_segmentor)             # onto the untouched base

`batches` is a re-iterable of source training batches (dicts with "image" and "label");
`loss_fn(model, batch)` returns per-sample losses of shape [B]. The decode head (`model.head`) is always
trained and always saved by the engine's checkpoint, so a tuner only accounts for the backbone side.

Each method has a config dataclass (`config_class`) whose fields carry help text in their metadata, as
PEFT's configs do; `build_tuner(name, model, **options)` checks the options against it, and
`config_help(cls.config_class)` lists them. A saved tuner is a folder with `tuner_config.json`
({"method", "config"}) plus what the method changed: `tuner_weights.safetensors` (adapters, full) or the
mask methods' sparse delta `delta.safetensors`. For resuming, the engine stores the model (added modules
included, as they live under `model.backbone`), the optimiser and `tuner.state_dict()` (e.g. masks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from fishertune.atomic import save_tensors, write_json
from fishertune.errors import FisherTuneError, InputError
from fishertune.registry import Registry
from fishertune.tensor_files import checked_tensors
from fishertune.validation import from_dict

TUNERS: Registry[type[Tuner]] = Registry("method")
register_tuner = TUNERS.register
"""Class decorator: makes a tuner selectable by its `name` in configs."""
CONFIG_FILE = "tuner_config.json"
WEIGHTS_FILE = "tuner_weights.safetensors"


def build_tuner(name: str, model: nn.Module, **options: Any) -> Tuner:
    """The tuner registered as `name` on `model`, its options checked against its config class."""
    return TUNERS.build(name, model, **options)


@dataclasses.dataclass
class TunerConfig:
    """A method without options."""


def make_config(config_class: type, options: dict[str, Any], method: str = "") -> Any:
    """Build `config_class(**options)` with every option checked against the field's type and range
    (`fishertune.validation.from_dict`): an unknown option is named with the nearest valid one, as
    `method.options.<key>` for a method of a run config, else as `<ConfigClass>.<key>`."""
    return from_dict(config_class, options, "method.options" if method else config_class.__name__)


def config_help(config_class: type) -> str:
    """One line per option: `name (default): help`, for `--help` texts and the docs."""
    def default(f: dataclasses.Field) -> Any:
        return f.default_factory() if f.default is dataclasses.MISSING else f.default
    return "\n".join(f"{f.name} ({default(f)!r}): {f.metadata.get('help', '')}"
                     for f in dataclasses.fields(config_class))


def require(condition: bool, message: str) -> None:
    """Config validation: raise a one-line FisherTuneError when `condition` is false."""
    if not condition:
        raise FisherTuneError(message)


@contextlib.contextmanager
def seeded(seed: int):
    """Draw the module initialisations inside from `torch.manual_seed(seed)`, leaving the global RNG as
    it was (CPU generator; adapters are built on CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Tuner:
    """Base class. Subclasses set `name`, `config_class` and `paper`, decide which backbone parameters
    train, and may add modules (registered under `model.backbone` so `.to()`, DDP and checkpoints see
    them)."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    config_class: ClassVar[type] = TunerConfig
    size_knob: ClassVar[tuple[str, int] | None] = None
    """The integer option that sets an adapter's size and its smallest valid value (budget matching,
    `fishertune.tuners.budget`); None for methods sized otherwise (the mask methods' `budget`)."""

    def __init__(self, model: nn.Module, **options: Any):
        self.model = model
        self.config = make_config(self.config_class, options, self.name)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    # -- what trains -------------------------------------------------------------------------------
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Backbone-side parameters this method updates (including modules it added), head excluded.
        Names are relative to `model` (e.g. `backbone.model.encoder...`)."""
        raise NotImplementedError

    @classmethod
    def count_trainable(cls, model: nn.Module, config: Any) -> int:
        """What `num_trainable` will be for `config` on the un-tuned `model`, worked out without changing
        it (from shapes and the budget): the basis of budget matching across methods."""
        raise NotImplementedError

    def num_trainable(self) -> int:
        """Backbone-side trainable scalars: for sparse methods the selected entries, not whole tensors."""
        return sum(p.numel() for _, p in self.trainable_named_parameters())

    def print_trainable_parameters(self) -> None:
        total = sum(p.numel() for p in self.model.backbone.parameters())
        head = sum(p.numel() for p in self.model.head.parameters())
        n = self.num_trainable()
        print(f"{self.name}: trainable backbone params: {n:,} || backbone params: {total:,} "
              f"|| trainable%: {100 * n / max(total, 1):.4f} || head params: {head:,}")

    # -- hooks ---------------------------------------------------------------------------------------
    def prepare(self, batches: Iterable[dict], loss_fn: Callable[[nn.Module, dict], torch.Tensor]) -> None:
        """One-off work after the head warm-up and before training (e.g. Fisher estimation)."""

    def _set_trainable(self) -> list[nn.Parameter]:
        for p in self.model.backbone.parameters():
            p.requires_grad_(False)
        backbone = [p for _, p in self.trainable_named_parameters()]
        for p in backbone:
            p.requires_grad_(True)
        return backbone

    def build_optimizer(self, *, lr: float, head_lr: float, weight_decay: float,
                        betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        """AdamW over the trainable backbone parameters (lr) and the head (head_lr). The settings are
        keyword-only and named as in `MaskSelector.build_optimizer`, which takes the parameters explicitly
        (it knows no head)."""
        backbone = self._set_trainable()
        groups = [{"params": list(self.model.head.parameters()), "lr": head_lr}]
        if backbone:
            groups.append({"params": backbone, "lr": lr})
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas)

    def after_step(self, step: int, total_steps: int, batches: Iterable[dict],
                   loss_fn: Callable[[nn.Module, dict], torch.Tensor],
                   optimizer: torch.optim.Optimizer) -> None:
        """Called after every optimiser step (step counts from 0); the same arguments, in the same order,
        as `MaskSelector.after_step`."""

    # -- resume and saving -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors the tuner needs to resume besides model and optimiser (e.g. masks)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_dict`."""

    def saved_tensors(self) -> dict[str, torch.Tensor]:
        """What `save_pretrained` writes besides the config: only what the method changed."""
        return {name: p for name, p in self.trainable_named_parameters()}

    def load_saved_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `saved_tensors`, onto a tuner just built on an untouched base model."""
        params = dict(self.model.named_parameters())
        missing = sorted(set(tensors) - set(params))
        if missing:
            raise FisherTuneError(f"saved {self.name} weights do not fit this model: no parameter "
                                  f"{missing[0]!r}")
        with torch.no_grad():
            for name, value in tensors.items():
                if params[name].shape != value.shape:
                    raise FisherTuneError(f"saved {self.name} weight {name!r} has shape "
                                          f"{tuple(value.shape)}, the model has {tuple(params[name].shape)}")
                params[name].copy_(value)

    def save_pretrained(self, directory: str) -> None:
        """Write only what the method changed (adapter weights or a sparse delta) plus a JSON config."""
        os.makedirs(directory, exist_ok=True)
        tensors = self.saved_tensors()
        if tensors:
            save_tensors(os.path.join(directory, WEIGHTS_FILE), tensors)
        write_json(os.path.join(directory, CONFIG_FILE),
                   {"method": self.name, "config": dataclasses.asdict(self.config)})

    def load_pretrained(self, directory: str) -> None:
        """Read what `save_pretrained` wrote (the config is read by `load_tuner`): exactly the tensors this
        tuner saves, each of its shape and dtype, all finite. A missing file is refused, not skipped: the
        model would otherwise run as the untouched base, a silently wrong result."""
        path = os.path.join(directory, WEIGHTS_FILE)
        expected = self.saved_tensors()
        if expected or os.path.exists(path):
            self.load_saved_tensors(checked_tensors(path, expected, f"saved {self.name} weights"))


def load_tuner(directory: str, model: nn.Module, method: str | None = None) -> Tuner:
    """Rebuild a saved tuner onto a freshly built base `model`: same config, then its saved tensors.
    `method`, when given, is the method the caller expects (its run's config): a saved tuner of another
    one is refused, since the mask methods share one file format and would load without complaint."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FisherTuneError(f"no saved tuner in {directory!r}: {CONFIG_FILE} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except ValueError as error:  # invalid JSON or not UTF-8
        raise InputError(f"saved tuner config {path} is not valid JSON: {error}") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("method"), str)
            and isinstance(saved.get("config"), dict)):
        raise InputError(f"saved tuner config {path} needs a 'method' name and a 'config' mapping")
    if method is not None and saved["method"] != method:
        raise InputError(f"saved tuner config {path} names the method {saved['method']!r}, but the run's "
                         f"config names {method!r}")
    tuner = build_tuner(saved["method"], model, **saved["config"])
    tuner.load_pretrained(directory)
    return tuner
