"""When SIGTERM and SIGINT interrupt a `fishertune` command, and when they no longer do: a command whose
result is entirely written (`result_complete`) finishes with its own exit status, whatever signal comes
after (docs/errors.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from fishertune.errors import EXIT_PROBLEMS_FOUND
from fishertune.interrupts import interrupt_handler


class _Completion:
    """The running command's state as the signal handlers see it."""

    late_signal: int | None = None
    """A SIGTERM or SIGINT that arrived after the command's result was complete (`result_complete`)."""
    status = 0
    """The exit status the command ended with (for a signal during the interpreter's shutdown)."""


completion = _Completion()
LATE_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def result_complete() -> None:
    """Called by a command once its result is entirely written (and by `main` when a command returns): from
    here on SIGTERM and SIGINT no longer interrupt it, since nothing is left to lose; the command finishes
    with its own exit status, and one line says the signal came after the result was complete."""
    if threading.current_thread() is threading.main_thread():
        for signum in LATE_SIGNALS:
            signal.signal(signum, _record_late_signal)


def late_signal_note(signum: int) -> str:
    """The line for a signal that came after the command's result was complete."""
    return f"note: {signal.Signals(signum).name} arrived after the command finished; its result is complete"


def _record_late_signal(signum, frame) -> None:
    completion.late_signal = signum


def _exit_after_completion(signum, frame) -> None:
    """A signal while the interpreter shuts down after the command ended: exit at once with the status the
    command ended with (its result is complete or its error was printed), never 128 + signal in silence."""
    if completion.status in (0, EXIT_PROBLEMS_FOUND):
        sys.stderr.write(late_signal_note(signum) + "\n")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(completion.status)


@contextlib.contextmanager
def signals_as_interrupts(program: bool = False):
    """SIGTERM (e.g. from a job scheduler) raises RunInterrupted and SIGINT KeyboardInterrupt, so runs stop as
    cleanly as on Ctrl-C, until the command's result is complete (`result_complete`); both are held back
    inside `held_interrupts` blocks (fishertune.interrupts). On leaving, the earlier handlers come back; when
    the process is the `fishertune` program itself (program=True), handlers that exit with the command's
    status stay instead, so a signal during the interpreter's shutdown (a second or more after a large
    command) does not turn a complete result into a silent exit 143."""
    completion.late_signal, completion.status = None, 0
    try:
        previous = {signum: signal.getsignal(signum) for signum in LATE_SIGNALS}
        for signum in LATE_SIGNALS:
            signal.signal(signum, interrupt_handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for signum in LATE_SIGNALS:
            signal.signal(signum, _exit_after_completion if program else previous[signum])
