"""Trainable-parameter budgets across methods, so comparisons can be made at equal size.

The mask methods (childtune, fish, random, fishertune) take their size directly from one config value,
`budget` (a fraction of the candidate backbone weights, or a count). The adapters grow with one
integer knob each; `match_budget` picks the knob value whose count is closest to a target, e.g. the
number of weights FisherTune selects. Counts are worked out from the un-tuned model's shapes
(`Tuner.count_trainable`), without building the method.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.tuners.base import TUNERS, make_config

SIZE_KNOBS = {name: cls.size_knob for name, cls in TUNERS.items() if cls.size_knob is not None}
"""Each adapter's `Tuner.size_knob`: the integer option that sets its size, and its smallest valid value."""


def count_trainable(method: str, model: nn.Module, **options: Any) -> int:
    """Backbone-side trainable scalars `build_tuner(method, model, **options)` would report."""
    cls = TUNERS.lookup(method)
    return cls.count_trainable(model, make_config(cls.config_class, options, method))


def match_budget(method: str, model: nn.Module, target: int, **options: Any) -> dict[str, Any]:
    """`options` with the adapter's size knob set so its trainable count is closest to `target`.

    Every adapter's count is affine in its knob (count = a + b·k), so k = round((target − a) / b),
    clamped to the knob's minimum.
    """
    if method not in SIZE_KNOBS:
        raise FisherTuneError(f"method {method!r} has no size knob to match; adapters with one: "
                              f"{', '.join(sorted(SIZE_KNOBS))} (mask methods take `budget` directly)")
    knob, low = SIZE_KNOBS[method]
    at = {k: count_trainable(method, model, **{**options, knob: k}) for k in (low, low + 1)}
    slope = at[low + 1] - at[low]
    best = max(low, round(low + (target - at[low]) / slope))
    return {**options, knob: best}
