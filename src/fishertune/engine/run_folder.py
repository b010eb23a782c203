"""A run folder is owned by one training at a time, and a failed run removes only the files it created.

Lock: `RUN/.lock` holds the pid and host of the training that owns the folder, under an exclusive
`flock`. The kernel releases the flock when that process ends in any way (even `kill -9`), so a lock file
left behind by a dead run is stale and is simply taken over; a second training into a live run's folder
is refused at once, naming the owner's pid.

Resume: `--resume` continues from the last checkpoint with the config the run was started with, except
for the settings in RESUME_OVERRIDES, which only change how the rest of the run is scheduled, logged or
evaluated (docs/errors.md, "Resuming"). Any other difference is refused, naming the key.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
from pathlib import Path

from fishertune.engine.checkpoint import latest_checkpoint
from fishertune.engine.config import Config, load_config, with_absolute_paths
from fishertune.engine.evaluator import PER_IMAGE_FILE
from fishertune.errors import InputError

LOCK_NAME = ".lock"
RUN_FILES = ("config.yaml", "log.jsonl", "tensorboard", "checkpoints", "model.safetensors", "tuner",
             "results.json", PER_IMAGE_FILE, "curves.png", "report.md")
"""What a training writes into its folder (`clean_up` removes only these, and only those it created)."""

RESUME_OVERRIDES = ("train.lr", "train.head_lr", "train.steps", "train.eval_every",
                    "train.checkpoint_every", "train.log_every", "eval.*", "data.val", "data.targets",
                    "data.workers", "data.max_pixels")
"""Settings `--resume --set KEY=VALUE` may change (`section.*`: every key of the section)."""


class RunFolder:
    """The folder of one training run: lock it, then `clean_up()` removes what this run added to it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.created = False
        self.before: set[str] = set()
        self._handle: int | None = None

    def lock(self) -> None:
        """Create the folder if needed and take its lock, or refuse when another live run holds it."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"--out {self.path} is a file, not a folder")
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_NAME
        for name in (LOCK_NAME, *RUN_FILES):  # never written through a link
            if (self.path / name).is_symlink():
                raise InputError(f"{self.path / name} is a symbolic link: a run folder holds its own files "
                                 f"(a training would write through the link into its target)")
        while True:
            handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(handle)
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                owner = lock.read_text(errors="replace").strip() or "unknown"
                raise InputError(f"{self.path} is in use by another training ({owner}; lock {lock}); wait "
                                 f"for it to finish or choose another --out") from None
            if _same_file(handle, lock):  # not a lock file its previous owner removed meanwhile
                break
            os.close(handle)
        os.ftruncate(handle, 0)
        os.write(handle, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._handle = handle
        self.before = {p.name for p in self.path.iterdir()} - {LOCK_NAME}

    def unlock(self) -> None:
        if self._handle is None:
            return
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        os.close(self._handle)  # closing releases the flock
        self._handle = None

    def clean_up(self) -> None:
        """Remove the files this run created (RUN_FILES that were not there when it took the lock), release
        the lock, and remove the folder if this run created it and nothing else is in it. Only the process
        holding the lock cleans up (under torchrun: rank 0); for the others this does nothing."""
        if self._handle is None:
            return
        for name in set(RUN_FILES) - self.before:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        self.unlock()
        if self.created and not any(self.path.iterdir()):
            with contextlib.suppress(OSError):  # another training may have taken the folder meanwhile
                self.path.rmdir()


def _same_file(handle: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle), os.stat(path))
    except FileNotFoundError:
        return False


def open_run(run_dir: Path, config: Config, resume: bool) -> Path | None:
    """Check the (locked) run folder; return the checkpoint to resume from (None for a fresh run).

    A fresh run needs an empty folder. A resumed one needs a checkpoint, and a config that differs from
    the run's config.yaml only in RESUME_OVERRIDES (then config.yaml is rewritten with the new values)."""
    checkpoints = run_dir / "checkpoints"
    if not resume:
        if any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            raise InputError(f"{run_dir} already exists and is not empty; pass --resume to continue it "
                             f"or choose another --out")
        return None
    checkpoint = latest_checkpoint(checkpoints)
    if checkpoint is None and not any((run_dir / name).exists() for name in RUN_FILES):
        raise InputError(f"nothing to resume: {run_dir} holds no run; start it without --resume")
    if checkpoint is None:
        raise InputError(f"nothing to resume: {run_dir} has no checkpoint (the run stopped before its first "
                         f"one); delete {run_dir} and start the run again without --resume")
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise InputError(f"cannot resume {run_dir}: its config.yaml is missing")
    saved = with_absolute_paths(load_config(saved_path)).to_dict()  # runs saved with relative paths too
    for key, (old, new) in differences(saved, config.to_dict()).items():
        if not resume_may_change(key):
            raise InputError(f"--resume: the config differs from {saved_path} at {key} ({old!r} != {new!r}); "
                             f"a resumed run may only change {', '.join(RESUME_OVERRIDES)}")
        if key in ("train.lr", "train.head_lr") and old == 0 and new != 0:
            raise InputError(f"--resume cannot change {key} from 0 (a learning rate is rescaled from its old "
                             f"value)")
    step = int(checkpoint.name.removeprefix("step_"))
    if config.train.warmup_steps + config.train.steps < step:
        raise InputError(f"--resume: train.steps {config.train.steps} ends before the checkpoint's step "
                         f"{step}")
    return checkpoint


def resume_may_change(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".*") and key.startswith(allowed[:-1]))
               for allowed in RESUME_OVERRIDES)


def differences(a: dict, b: dict, prefix: str = "") -> dict[str, tuple]:
    """{dotted key: (value in a, value in b)} of every leaf where two nested dicts differ."""
    out = {}
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out.update(differences(a[key], b[key], f"{prefix}{key}."))
        elif a.get(key) != b.get(key):
            out[f"{prefix}{key}"] = (a.get(key), b.get(key))
    return out
