"""SIGTERM and SIGINT held back while the main thread is inside code that shares a lock with another thread.

`fishertune` turns both signals into exceptions (fishertune.cli.signals), raised wherever the main thread
is when the signal arrives. Raised inside TensorBoard's `add_scalar`, whose queue its writer thread
waits on, such an exception can leave that thread waiting forever, so that `SummaryWriter.close` blocks
and the interrupted run never exits (seen on a tiny run sent SIGTERM 0-0.6 s after its first logged step:
once in the first 4 tries, and once in CI; with the hold, none in 45). Code like that runs
`with held_interrupts():`; a signal arriving inside is raised as soon as the outermost block ends, or
dropped if the block ends with an exception of its own.
"""

from __future__ import annotations

import contextlib
import signal

from fishertune.errors import RunInterrupted


class _Held:
    depth = 0
    pending: int | None = None  # the first signal that arrived while held


_held = _Held()


@contextlib.contextmanager
def held_interrupts():
    _held.depth += 1
    try:
        yield
    finally:
        _held.depth -= 1
        signum = _held.pending if _held.depth == 0 else None
        if _held.depth == 0:
            _held.pending = None
    if signum is not None:
        raise_interrupt(signum)


def interrupt_handler(signum, frame) -> None:
    """The handler of SIGTERM and SIGINT while a command runs: the interrupt now, or when the hold ends."""
    if _held.depth > 0:
        if _held.pending is None:
            _held.pending = signum
        return
    raise_interrupt(signum)


def raise_interrupt(signum: int) -> None:
    """SIGTERM as RunInterrupted (naming it), SIGINT as the KeyboardInterrupt of Ctrl-C."""
    if signum == signal.SIGTERM:
        raise RunInterrupted("interrupted by SIGTERM", signum)
    raise KeyboardInterrupt
