"""Reading safetensors files that must be sound: one InputError naming the file for a missing, corrupt or
mismatched one (loading copies values into a model, where a missing tensor, a cast or a NaN would give a
silently wrong model). Nothing here executes code from the file."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from fishertune.errors import InputError


def read_tensors(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing, truncated or corrupt file is one InputError."""
    try:
        return load_file(str(path))
    except (OSError, ValueError, SafetensorError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise InputError(f"cannot read {what} {path}: {reason}") from None


def checked_tensors(path: str | Path, expected: dict[str, torch.Tensor],
                    what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file that must be exactly `expected`'s: the same names, each of the same
    shape and dtype, every value finite. Loading copies values into the model, where a missing tensor, a
    cast or a NaN would otherwise give a silently wrong model; a problem is one InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} is {'not a file' if path.exists() else 'missing'}")
    state = read_tensors(path, what)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing:
        raise InputError(f"{what} {path} lacks the tensor {missing[0]!r} ({len(missing)} missing)")
    if extra:
        raise InputError(f"{what} {path} holds an unexpected tensor {extra[0]!r} ({len(extra)} unexpected)")
    for name, tensor in state.items():
        want = expected[name]
        if tensor.shape != want.shape:
            raise InputError(f"{what} {path}: {name!r} has shape {list(tensor.shape)}, the model's is "
                             f"{list(want.shape)}")
        if tensor.dtype != want.dtype:
            raise InputError(f"{what} {path}: {name!r} is {str(tensor.dtype).removeprefix('torch.')}, the "
                             f"model's is {str(want.dtype).removeprefix('torch.')}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{what} {path}: {name!r} holds NaN or infinite values")
    return state
