"""Atomic file writes: write a temporary file in the destination folder, then `os.replace` it into place.

A reader, or a run killed mid-write, sees either the old file or the complete new one, never a
half-written one; a failed write leaves nothing behind. Every module that writes files users keep
(checkpoints, deltas, results, reports, images) goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fishertune.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(temporary path)` to produce the file, then move it to `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file of `tensors` (detached, contiguous, on CPU)."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    return write_atomic(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def check_writable(path: str | os.PathLike, folder: bool = False) -> Path:
    """Refuse (one InputError) an output that cannot be written, before any work: a file output that is a
    folder, a folder output that is a file, a parent that is a file, or a place where no file can be created
    (probed with a temporary file in the nearest existing folder, so read-only mounts count too)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"output folder {path} is a file")
    if not folder and path.is_dir():
        raise InputError(f"output file {path} is a folder; give a file name")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create {path}: {existing} is a file")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-check.", dir=existing)
    except OSError as error:
        raise InputError(f"cannot write {path}: {existing} is not writable ({error.strerror})") from None
    os.close(handle)
    os.unlink(probe)
    return path


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file; a missing, unreadable or invalid one is one InputError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} {path} is missing") from None
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(f"{what} {path} is not readable JSON: {error}") from None
