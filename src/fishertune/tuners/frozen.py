"""Frozen backbone: only the decode head trains (the linear-probe baseline of DGSS papers)."""

from __future__ import annotations

from torch import nn

from fishertune.tuners.base import Tuner, register_tuner


@register_tuner
class FrozenTuner(Tuner):
    """Trains nothing in the backbone: the decode head alone (linear probing of a frozen VFM, DINOv2,
    Oquab et al., 2023). No options."""

    name = "frozen"
    paper = "linear probing / frozen VFM (Oquab et al., DINOv2, 2023)"

    @classmethod
    def count_trainable(cls, model: nn.Module, config) -> int:
        return 0

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return []
