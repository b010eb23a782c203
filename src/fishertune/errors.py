"""The project's exceptions, and the exit status the `fishertune` command gives each (docs/errors.md).

    FisherTuneError        base of every error raised on purpose; caught as such, a one-line message
    ├── InputError         bad user input: a file, config key, value or name; CLI exit status 2
    │   └── TrainingDiverged (engine.trainer) the loss became NaN or infinite; exit status 2
    └── UsageError         a programmer called the API wrongly (also a ValueError); from the CLI this is
                           a bug in FisherTune, printed with its traceback, exit status 70
    RunInterrupted         Ctrl-C or SIGTERM (a KeyboardInterrupt); exit status 128 + signal number

`FisherTuneError` raised directly means bad input, as `InputError` does (older code raises the base).
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_PROBLEMS_FOUND = 1
"""`fishertune data check` found bad files."""
EXIT_BAD_INPUT = 2
"""Bad input or config (any FisherTuneError but UsageError); also argparse's status for bad arguments."""
EXIT_BUG = 70
"""An unexpected exception: a bug in FisherTune (sysexits' EX_SOFTWARE)."""


class FisherTuneError(Exception):
    """Base class of the project's errors; its message is one line naming the problem."""


class InputError(FisherTuneError):
    """A problem with the user's input (files, config, names), stated in one line."""


class UsageError(FisherTuneError, ValueError):
    """A function of the API called with arguments it does not accept (a programming error)."""


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal; the message says what was kept and how to continue."""

    def __init__(self, message: str = "interrupted", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum
