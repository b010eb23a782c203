"""Run logs: one JSON record per line in RUN/log.jsonl, mirrored to TensorBoard when it is installed."""

from __future__ import annotations

import json
from pathlib import Path

from fishertune.interrupts import held_interrupts


class RunLogger:
    """Appends records {"step": ..., "phase": ..., <scalars>} to log.jsonl (rank 0 only). Its TensorBoard
    calls hold SIGTERM and SIGINT back (fishertune.interrupts): the writer's thread shares their queue."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "log.jsonl"
        self.tensorboard = None
        if enabled:
            try:  # optional dependency: tensorboard, the extra `fishertune[tensorboard]`
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                with held_interrupts():
                    self.tensorboard = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, phase: str, **scalars: float) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps({"step": step, "phase": phase, **scalars}) + "\n")
        except OSError as error:  # a full disk names the log (a failed write() names no file)
            raise OSError(error.errno, error.strerror or str(error), str(self.path)) from None
        if self.tensorboard is not None:
            with held_interrupts():
                for name, value in scalars.items():
                    if isinstance(value, (int, float)):
                        self.tensorboard.add_scalar(f"{phase}/{name}", value, step)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run repeats the steps after its checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if (record := _record(line)) is not None and record.get("step", step + 1) <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def close(self) -> None:
        if self.tensorboard is not None:
            with held_interrupts():
                self.tensorboard.close()
                self.tensorboard = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _record(line: str) -> dict | None:
    """A log line's record; None for a blank or torn line (a run killed mid-write leaves its last line
    incomplete, and a resumed run drops it)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_log(run_dir: str | Path) -> list[dict]:
    """The records of RUN/log.jsonl in order (none when it does not exist; torn lines skipped)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [r for line in path.read_text(encoding="utf-8").splitlines() if (r := _record(line)) is not None]
