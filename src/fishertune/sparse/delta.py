"""Sparse deltas: the selected entries of a fine-tuned model, stored against the untouched base weights.

One .safetensors file. For every parameter with selected entries it holds "<name>.indices" (flat indices
into the parameter, sorted: int32, or int64 for a tensor of 2**31 entries or more; files written before
int32 indices hold int64 and load all the same) and "<name>.values" (the tuned values themselves, in the
parameter's dtype, not differences, so reloading is bit-exact). The file's metadata key "fishertune_delta"
holds the JSON config {"format": "fishertune-delta", "version": 1, "tensors": {name: {"shape", "dtype",
"count", "base_sha256"}}}, where base_sha256 is the sha256 of the base tensor's raw bytes (C order).
Loading checks shape, dtype and hash of the model's current values of every touched tensor, so a delta is
only applied to the base it was made from. Writes are atomic (temporary file in the same folder + os.replace).
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from fishertune.atomic import save_tensors
from fishertune.errors import InputError, UsageError
from fishertune.sparse.flat_index import flat_indices

FORMAT = "fishertune-delta"
METADATA_KEY = "fishertune_delta"


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes in C order."""
    data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(data.tobytes()).hexdigest()


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def save_delta(model: nn.Module, base_state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
               path: str | os.PathLike) -> dict:
    """Write the selected entries of `model` against `base_state`; returns the JSON config written.

    Refuses (UsageError) when an unselected entry differs from the base, since the delta could then
    not reproduce the model.
    """
    params = dict(model.named_parameters())
    tensors: dict[str, torch.Tensor] = {}
    config = {"format": FORMAT, "version": 1, "tensors": {}}
    for name, mask in masks.items():
        if not bool(mask.any()):
            continue
        if name not in params or name not in base_state:
            raise UsageError(f"mask names {name!r}, which is not a parameter of the model and the base")
        current, base = params[name].detach(), base_state[name].detach().to(params[name].device)
        if current.shape != base.shape or mask.shape != current.shape:
            raise UsageError(f"{name!r}: model, base and mask shapes differ "
                             f"({list(current.shape)}, {list(base.shape)}, {list(mask.shape)})")
        outside = ~mask.to(current.device)
        if not torch.equal(current[outside], base[outside]):
            raise UsageError(f"{name!r} changed outside its mask; a sparse delta cannot reproduce it")
        index = flat_indices(mask).cpu()
        tensors[f"{name}.indices"] = index
        tensors[f"{name}.values"] = current.reshape(-1).cpu()[index].clone()
        config["tensors"][name] = {"shape": list(current.shape), "dtype": _dtype_name(current),
                                   "count": index.numel(), "base_sha256": tensor_sha256(base)}
    save_tensors(path, tensors, metadata={METADATA_KEY: json.dumps(config)})
    return config


def read_delta_config(path: str | os.PathLike) -> dict:
    """The JSON config stored in a delta file, checked for its format and the fields of every tensor."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"no delta file at {path!r}")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (OSError, SafetensorError) as error:
        raise InputError(f"cannot read delta {path!r}: {error}") from None
    if METADATA_KEY not in metadata:
        raise InputError(f"{path!r} is not a FisherTune delta (no {METADATA_KEY!r} metadata)")
    try:
        config = json.loads(metadata[METADATA_KEY])
    except ValueError as error:
        raise InputError(f"{path!r}: the delta's metadata is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or config.get("version") != 1:
        found = config.get("format") if isinstance(config, dict) else None
        version = config.get("version") if isinstance(config, dict) else None
        raise InputError(f"{path!r}: unsupported delta format {found!r} version {version!r}")
    tensors = config.get("tensors")
    if not isinstance(tensors, dict):
        raise InputError(f"{path!r}: the delta's metadata has no 'tensors' mapping")
    for name, info in tensors.items():
        fields_ok = (isinstance(info, dict) and isinstance(info.get("shape"), list)
                     and all(isinstance(d, int) and d >= 0 for d in info["shape"])
                     and isinstance(info.get("dtype"), str) and isinstance(info.get("count"), int)
                     and isinstance(info.get("base_sha256"), str))
        if not fields_ok:
            raise InputError(f"{path!r}: delta entry {name!r} needs shape, dtype, count and base_sha256")
    return config


@torch.no_grad()
def load_delta(model: nn.Module, path: str | os.PathLike) -> dict:
    """Write the delta's values into `model` (which must hold the exact base weights); returns its config.

    All or nothing: every touched tensor (shape, dtype, base hash) and every stored index and value (count,
    dtype, indices within the tensor, no index twice) is checked before any weight is written, so a refused
    delta leaves the model unchanged.
    """
    config, updates = checked_delta(model, path)
    params = dict(model.named_parameters())
    for name, (index, values) in updates.items():
        params[name].view(-1)[index.to(params[name].device)] = values.to(params[name].device)
    return config


def checked_delta(model: nn.Module, path: str | os.PathLike) -> tuple[dict, dict]:
    """(config, {name: (indices, values)}) of a delta, every check of `load_delta` passed; nothing is
    written to `model`."""
    config = read_delta_config(path)
    params = dict(model.named_parameters())
    for name, info in config["tensors"].items():
        if name not in params:
            raise InputError(f"delta tensor {name!r} is not a parameter of this model")
        p = params[name]
        if list(p.shape) != info["shape"]:
            raise InputError(f"delta tensor {name!r} has shape {info['shape']}, "
                             f"the model's is {list(p.shape)}")
        if _dtype_name(p) != info["dtype"]:
            raise InputError(f"delta tensor {name!r} has dtype {info['dtype']}, "
                             f"the model's is {_dtype_name(p)}")
        if not p.is_contiguous():
            raise UsageError(f"parameter {name!r} must be contiguous to load a delta")
        if tensor_sha256(p) != info["base_sha256"]:
            raise InputError(f"delta tensor {name!r} was made for a different base (sha256 mismatch)")
    updates = {name: _read_entries(path, name, info, params[name])
               for name, info in config["tensors"].items()}
    return config, updates


def _read_entries(path: str | os.PathLike, name: str, info: dict,
                  p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values) of one delta tensor, checked against its config entry and the parameter."""
    where = f"delta {os.fspath(path)!r}, tensor {name!r}"
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            index, values = f.get_tensor(f"{name}.indices"), f.get_tensor(f"{name}.values")
    except (OSError, SafetensorError) as error:
        raise InputError(f"{where}: cannot read its indices and values ({error})") from None
    count = info["count"]
    if index.dtype not in (torch.int32, torch.int64) or index.shape != (count,) or values.shape != (count,):
        raise InputError(f"{where}: expected {count} int32 or int64 indices and {count} values, got "
                         f"{index.dtype} {list(index.shape)} and {list(values.shape)}")
    if values.dtype != p.dtype:
        raise InputError(f"{where}: values are {_dtype_name(values)}, the parameter is {_dtype_name(p)}")
    if count and (int(index.min()) < 0 or int(index.max()) >= p.numel()):
        raise InputError(f"{where}: indices outside 0..{p.numel() - 1}")
    if torch.unique(index).numel() != count:
        raise InputError(f"{where}: an index appears twice")
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        raise InputError(f"{where}: values hold NaN or infinity")
    return index, values
