"""Atomic file writes: write a temp file in the destination folder, then `os.replace` it into place.

A reader (or a run killed mid-write) therefore sees either the old file or the complete new one, never a
half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(temp_path)` to produce the file, then move it to `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf-8") as file:
            file.write(text)

    atomic_write(path, write)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors file of `tensors` (made contiguous), written atomically."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))
