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

`batches` is a re-iterable of source training batches (see CONTRACTS: dicts with "image", "label");
`loss_fn(model, batch)` returns per-sample losses of shape [B]. The decode head (`model.head`) is always
trained and always saved by the engine's checkpoint, so a tuner only accounts for the backbone side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from fishertune.errors import FisherTuneError

TUNERS: dict[str, type[Tuner]] = {}


def register_tuner(cls: type[Tuner]) -> type[Tuner]:
    """Class decorator: makes a tuner selectable by its `name` in configs."""
    TUNERS[cls.name] = cls
    return cls


def build_tuner(name: str, model: nn.Module, **options: Any) -> Tuner:
    if name not in TUNERS:
        raise FisherTuneError(f"unknown method {name!r}; available: {', '.join(sorted(TUNERS))}")
    return TUNERS[name](model, **options)


class Tuner:
    """Base class. Subclasses set `name`, decide which backbone parameters train, and may add modules."""

    name: ClassVar[str] = ""

    def __init__(self, model: nn.Module, **options: Any):
        self.model = model
        self.options = options

    # -- what trains -------------------------------------------------------------------------------
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Backbone-side parameters this method updates (including modules it added), head excluded."""
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

    def build_optimizer(self, lr: float, head_lr: float, weight_decay: float,
                        betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        """AdamW over the trainable backbone parameters (lr) and the head (head_lr)."""
        for p in self.model.backbone.parameters():
            p.requires_grad_(False)
        backbone = [p for _, p in self.trainable_named_parameters()]
        for p in backbone:
            p.requires_grad_(True)
        groups = [{"params": list(self.model.head.parameters()), "lr": head_lr}]
        if backbone:
            groups.append({"params": backbone, "lr": lr})
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas)

    def after_step(self, step: int, total_steps: int, batches: Iterable[dict],
                   loss_fn: Callable[[nn.Module, dict], torch.Tensor],
                   optimizer: torch.optim.Optimizer) -> None:
        """Called after every optimiser step (step counts from 0)."""

    # -- resume and saving -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors the tuner needs to resume besides model and optimiser (e.g. masks)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_dict`."""

    def save_pretrained(self, directory: str) -> None:
        """Write only what the method changed (adapter weights or a sparse delta) plus a JSON config."""
        raise NotImplementedError


def load_tuner(directory: str, model: nn.Module) -> Tuner:
    """Rebuild a saved tuner onto a freshly built base `model` (implemented with the tuners)."""
    raise NotImplementedError
