"""Growth of the selected set: δ(t) = δ_max − (δ_max − δ_min)·exp(−t/T), masks only ever gain entries."""

from __future__ import annotations

import math
from typing import Any

import torch

from fishertune.errors import FisherTuneError
from fishertune.sparse.selection import select_topk


def growth_ratio(step: int, ratio_min: float, ratio_max: float, growth_steps: float) -> float:
    """δ(t); growth_steps T = 0 means no growth (δ = δ_max from the start)."""
    if not 0.0 <= ratio_min <= ratio_max <= 1.0:
        raise FisherTuneError(f"need 0 <= ratio_min <= ratio_max <= 1, got {ratio_min}, {ratio_max}")
    if growth_steps < 0:
        raise FisherTuneError(f"growth_steps must be >= 0, got {growth_steps}")
    if growth_steps == 0:
        return ratio_max
    return ratio_max - (ratio_max - ratio_min) * math.exp(-step / growth_steps)


def grow_masks(old_masks: dict[str, torch.Tensor] | None, scores: dict[str, torch.Tensor],
               ratio: float, **selection: Any) -> dict[str, torch.Tensor]:
    """old ∪ the best new entries by `scores`, with the size `select_topk(scores, ratio, ...)` gives.

    The count is exactly that of `select_topk` at this ratio (global scope: ⌊ratio·N + ½⌋; per-tensor:
    ⌊ratio·n_t + ½⌋ per tensor, which never decreases as the ratio grows), the old entries counted in.
    A ratio whose budget is below the old selection is an error.
    """
    return select_topk(scores, ratio=ratio, keep=old_masks, **selection)
