"""Splitting a batch into samples: tensors are cut along dim 0, everything else is passed unchanged.

A batch is any nest of dicts, lists and tuples. Tensor leaves whose first dimension is the batch size are
per-sample data; other leaves (file names, scalars) are shared by all samples of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fishertune.errors import FisherTuneError


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply `fn` to every tensor leaf of a nest of dicts, lists and tuples."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        items = [map_tensors(v, fn) for v in batch]
        return type(batch)(items) if not hasattr(batch, "_fields") else type(batch)(*items)
    return batch


def batch_size(batch: Any) -> int:
    """The first dimension of the first tensor leaf."""
    sizes: list[int] = []
    map_tensors(batch, lambda t: sizes.append(t.shape[0]) if t.dim() > 0 else None)
    if not sizes:
        raise FisherTuneError("a batch must contain at least one tensor with a batch dimension")
    return sizes[0]


def sample(batch: Any, index: int, size: int) -> Any:
    """The batch of one sample: every per-sample tensor sliced to [index:index+1]."""
    return map_tensors(batch, lambda t: t[index:index + 1] if t.dim() > 0 and t.shape[0] == size else t)


def is_per_sample(t: torch.Tensor, size: int) -> bool:
    return t.dim() > 0 and t.shape[0] == size


def per_sample_tensors(batch: Any, size: int) -> list[torch.Tensor]:
    """The per-sample tensor leaves, in traversal order (the inputs `vmap` maps over)."""
    leaves: list[torch.Tensor] = []
    map_tensors(batch, lambda t: leaves.append(t) if is_per_sample(t, size) else None)
    return leaves


def rebuild_one(batch: Any, size: int, leaves: list[torch.Tensor]) -> Any:
    """The batch of one sample from per-sample leaves without their batch dim (as seen inside `vmap`)."""
    it = iter(leaves)
    return map_tensors(batch, lambda t: next(it).unsqueeze(0) if is_per_sample(t, size) else t)
