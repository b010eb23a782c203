"""Resumable checkpoints as safetensors + JSON; nothing is pickled, so loading one runs no code.

A checkpoint is a folder `RUN/checkpoints/step_XXXXXXX/` holding
  model.safetensors  the model's state (each shared tensor once),
  state.safetensors  every tensor of the training state (optimiser moments, tuner masks, RNG states),
  state.json         the rest: step, config, scheduler, optimiser structure, RNG states of Python/numpy,
                     with each tensor replaced by {"__tensor__": key} into state.safetensors.
The folder is written under a temporary name and renamed when complete; `RUN/checkpoints/latest.json`
then points at it, so a run killed at any moment leaves its previous checkpoint intact.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fishertune.atomic import naming_final_folder, read_json, save_tensors, write_json
from fishertune.errors import InputError
from fishertune.tensor_files import read_tensors

LATEST = "latest.json"


# -- nested structures with tensors <-> JSON + a flat tensor dict -----------------------------------------

def flatten(obj: Any, tensors: dict[str, torch.Tensor], key: str = "t") -> Any:
    """JSON-able copy of `obj`: tensors move into `tensors` (referenced by key), tuples are tagged."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"cannot store dict keys {list(obj)[:3]} in a checkpoint")
        return {"__dict__": [[k, flatten(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten`."""
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    return obj


# -- model state -------------------------------------------------------------------------------------------

def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with each tensor once (a module registered under two names is stored once)."""
    unique = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    return {name: t for name, t in model.state_dict().items() if name in unique}


def save_model(model: nn.Module, path: str | Path) -> None:
    save_tensors(path, model_state(model), metadata={"format": "pt"})


def load_model(model: nn.Module, path: str | Path) -> None:
    """Load weights saved by `save_model`; keys and shapes must match the model exactly (aliases aside)."""
    state = read_tensors(path, "model weights")
    expected = model_state(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(f"weights {path} do not fit the model: "
                         f"{len(missing)} missing (e.g. {missing[:2]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise InputError(f"weights {path}: {name} has shape {list(state[name].shape)}, the model's is "
                             f"{list(tensor.shape)}")
    model.load_state_dict(state, strict=False)


# -- RNG states --------------------------------------------------------------------------------------------

def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- checkpoints --------------------------------------------------------------------------------------------

def save_checkpoint(directory: str | Path, step: int, model: nn.Module, state: dict, keep: int = 1) -> Path:
    """Write checkpoint `step` (model + nested `state` with tensors), point latest.json at it, prune old."""
    directory = Path(directory)
    final = directory / f"step_{step:07d}"
    temp = directory / f".step_{step:07d}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        tensors: dict[str, torch.Tensor] = {}
        structure = flatten(state, tensors)
        save_model(model, temp / "model.safetensors")
        save_tensors(temp / "state.safetensors", tensors)
        write_json(temp / "state.json", {"step": step, "state": structure})
    except OSError as error:  # named as the checkpoint's file, not the temporary folder's
        shutil.rmtree(temp, ignore_errors=True)
        raise naming_final_folder(error, temp, final) from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    temp.rename(final)
    write_json(directory / LATEST, {"step": step, "path": final.name})
    for old in sorted(directory.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint folder `latest.json` names; the pointer must name a `step_*` folder inside
    `directory` that exists. Without a pointer (a run killed between renaming its first checkpoint into
    place and writing the pointer), the newest `step_*` folder, each complete since it is renamed into
    place only when written; None when there is none."""
    directory = Path(directory)
    pointer = directory / LATEST
    if not pointer.is_file():
        steps = sorted(p for p in directory.glob("step_*") if p.is_dir() and p.name[5:].isdigit())
        return steps[-1] if steps else None
    record = read_json(pointer, "checkpoint pointer")
    name = record.get("path") if isinstance(record, dict) else None
    if not isinstance(name, str) or not name.startswith("step_") or Path(name).name != name:
        raise InputError(f"checkpoint pointer {pointer} must name a step_* folder inside {directory}, "
                         f"got {name!r}")
    if not (directory / name).is_dir():
        raise InputError(f"checkpoint pointer {pointer} names {name}, which does not exist")
    return directory / name


def load_checkpoint(path: str | Path, model: nn.Module) -> tuple[int, dict]:
    """Load the model weights in place; return (step, state) with tensors restored. A damaged checkpoint
    (missing or corrupt file, a reference to a tensor that is not there) is one InputError."""
    path = Path(path)
    record = read_json(path / "state.json", "checkpoint state")
    tensors = read_tensors(path / "state.safetensors", "checkpoint state")
    try:
        step, state = record["step"], unflatten(record["state"], tensors)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"checkpoint {path} is damaged: {type(error).__name__} {error} in state.json"
                         ) from None
    if not isinstance(step, int) or not isinstance(state, dict):
        raise InputError(f"checkpoint {path} is damaged: state.json holds no step and state")
    load_model(model, path / "model.safetensors")
    return step, state
