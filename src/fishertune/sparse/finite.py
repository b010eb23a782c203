"""No NaN or infinity reaches the Fisher scores or a selection (they would rank arbitrarily)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fishertune.errors import InputError


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity, or None when all are finite."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def require_finite(tensors: Mapping[str, torch.Tensor], what: str, hint: str = "") -> None:
    """Raise InputError naming the first tensor of `tensors` with a NaN or an infinity."""
    name = first_non_finite(tensors)
    if name is not None:
        tensor = tensors[name]
        kind = "NaN" if bool(torch.isnan(tensor).any()) else "an infinite value"
        raise InputError(f"{what} of {name!r} contain {kind}{hint}")
