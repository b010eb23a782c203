"""Flat indices of a mask's selected entries, stored compactly.

int32 when the tensor has fewer than 2**31 entries (every index fits), int64 otherwise: 4 bytes per
selected entry instead of 8 in MaskedAdamW's state, the tuner's kept base values and the sparse delta.
"""

from __future__ import annotations

import torch

INT32_LIMIT = 2**31


def index_dtype(numel: int) -> torch.dtype:
    """The smallest index dtype that holds every flat index of a tensor of `numel` entries."""
    return torch.int32 if numel < INT32_LIMIT else torch.int64


def flat_indices(mask: torch.Tensor) -> torch.Tensor:
    """Sorted flat indices of the True entries of `mask`, in index_dtype(mask.numel())."""
    return mask.reshape(-1).nonzero().squeeze(1).to(index_dtype(mask.numel()))
