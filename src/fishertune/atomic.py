"""Atomic file writes: write a temporary file in the destination folder, then `os.replace` it into place.

A reader, or a run killed mid-write, sees either the old file or the complete new one, never a
half-written one; a failed write leaves nothing behind, and its OSError names the destination (a full
disk reads "cannot write RUN/model.safetensors: No space left on device", never a temporary name or a
source file). Every module that writes files users keep (checkpoints, deltas, results, reports, images)
goes through here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fishertune.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(temporary path)` to produce the file, then move it to `path` (parents created)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise naming_destination(error, None, path) from None
    os.close(handle)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(temp, path)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise naming_destination(error, temp, path) from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Errors of a write that ran out of room (disk full, quota exceeded, file too large)."""


def naming_destination(error: OSError, temp: str | None, path: Path) -> OSError:
    """`error` of writing `path` (through `temp`) with `path` as its file name when the file it names is the
    temporary, or none, or the write ran out of room (shutil.copyfile names its source then)."""
    named = error.filename is None or str(error.filename) == temp or error.errno in DISK_FULL
    if not named:
        return error
    return OSError(error.errno, error.strerror or str(error), str(path))


def disk_full_message(error: OSError, advice: bool = True) -> str:
    """One line for a write that ran out of room, naming the file being written."""
    target = error.filename2 if error.filename2 is not None else error.filename  # copyfile: (source, dest)
    line = f"cannot write {target if target is not None else 'a file'}: " \
           f"{error.strerror or os.strerror(error.errno)}"
    return f"{line} (free some space, or write elsewhere)" if advice else line


def naming_final_folder(error: OSError, temp: Path, final: Path) -> OSError:
    """`error` of writing into the temporary folder `temp` that becomes `final`: the file it names (for a
    full disk, the file written) as its place in `final`, which is what the user knows; others unchanged."""
    names = [error.filename2, error.filename] if error.errno in DISK_FULL else [error.filename]
    for name in names:
        if name is None:
            continue
        try:
            inside = Path(name).relative_to(temp)
        except ValueError:
            continue
        return OSError(error.errno, error.strerror or str(error), str(final / inside))
    if error.errno in DISK_FULL and error.filename2 is not None:
        return OSError(error.errno, error.strerror or str(error), error.filename2)
    return error


@contextlib.contextmanager
def new_folder(out_dir: Path, label: str) -> Iterator[Path]:
    """A folder written whole: the block fills a temporary folder beside `out_dir` (a name only this call
    creates: `label`, the pid and a random part, so no folder of the user's is touched), which then becomes
    `out_dir` (absent, or empty as `check_new_folder` checked). A failure leaves nothing, and its OSError
    names the file as it would be in `out_dir` (`naming_final_folder`)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{label}-{os.getpid()}-", dir=out_dir.parent))
    try:
        yield temp
        if out_dir.exists():
            out_dir.rmdir()
        temp.rename(out_dir)
    except OSError as error:
        shutil.rmtree(temp, ignore_errors=True)
        raise naming_final_folder(error, temp, out_dir) from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """`obj` as JSON; a NaN or infinite number is written as null (JSON has no such numbers, and strict
    readers refuse Python's NaN)."""
    return write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(value) for value in obj]
    return obj


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file of `tensors` (detached, contiguous, on CPU). The same tensor under two names (e.g. a
    score that is the Fisher itself) is written twice, as safetensors refuses shared memory."""
    from safetensors.torch import save_file  # here: importing it loads torch, and the CLI imports this module

    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    seen = set()
    for name, t in tensors.items():
        if (t.data_ptr(), t.nbytes) in seen and t.nbytes:
            tensors[name] = t.clone()
        seen.add((tensors[name].data_ptr(), tensors[name].nbytes))

    def write(temp: str) -> None:
        try:
            save_file(tensors, temp, metadata=metadata)
        except Exception as error:  # safetensors reports an I/O error as SafetensorError("... (os error N)")
            code = re.search(r"\(os error (\d+)\)", str(error))
            if type(error).__name__ != "SafetensorError" or code is None:
                raise
            raise OSError(int(code[1]), os.strerror(int(code[1])), temp) from None

    return write_atomic(path, write)


def check_writable(path: str | os.PathLike, folder: bool = False) -> Path:
    """Refuse (one InputError) an output that cannot be written, before any work: a symbolic link (even a
    dangling one), a file output that is a folder, a folder output that is a file, a parent that is a file,
    or a place where no file can be created (probed with a temporary file in the nearest existing folder,
    so read-only mounts count too)."""
    path = Path(path)
    if path.is_symlink():  # dangling or not: an output is never written through a link
        raise InputError(f"output {path} is a symbolic link (to {os.readlink(path)}); outputs are not "
                         f"written through links: give the real path or a new name")
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


def check_new_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output folder that a command writes whole (a temporary folder renamed
    into place): a name that is no new folder (".", "..", a root), a non-empty folder, and what
    `check_writable` refuses."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise InputError(f"{option} {path} names the current folder, a parent or a root, not a new folder: "
                         f"give the name of a folder to create")
    check_writable(path, folder=True)
    if path.is_dir() and any(path.iterdir()):
        raise InputError(f"{path} already exists and is not empty; choose a new folder")
    return path


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file; a missing, unreadable or invalid one is one InputError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} {path} is missing") from None
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(f"{what} {path} is not readable JSON: {error}") from None
