"""Name registries (tuners, backbones, heads, datasets, synthetic domains) and the one error for a name
that is not there.

    TUNERS = Registry("method")
    @TUNERS.register                       # a class registers under its `name`
    class LoraTuner(Tuner): name = "lora"
    TUNERS.build("lora", model, rank=8)    # or TUNERS.lookup(name) for the class itself
    TUNERS.lookup("lorra")                 # InputError: unknown method 'lorra' (did you mean 'lora'?);
                                           #             available: adaptformer, childtune, ...

A registry is a read-only mapping (`name in TUNERS`, `sorted(TUNERS)`, `TUNERS[name]`); facts about an
entry (a tuner's size knob, a dataset's splits and split aliases) live on the entry itself.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from fishertune.errors import InputError, UsageError

T = TypeVar("T")


def nearest(name: str, valid: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name closest to `name` (difflib's ratio >= cutoff), or None."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(name: str, valid: Iterable[str], prefix: str = "", cutoff: float = 0.6) -> str:
    """" (did you mean 'prefix<x>'?)" for the valid name x closest to `name`, or "" when none is close."""
    close = nearest(name, valid, cutoff)
    return f" (did you mean {prefix + close!r}?)" if close is not None else ""


def suggestion(name: str, valid: Iterable[str]) -> str:
    """" (did you mean 'x'?); available: a, b, c" for a `name` that is not one of `valid` (sorted); only
    the hint when `valid` is empty."""
    valid = sorted(valid)
    return did_you_mean(name, valid) + (f"; available: {', '.join(valid)}" if valid else "")


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> InputError:
    """The error for a name that is not one of `valid`, in one line:
    unknown <kind> 'name' (did you mean 'x'?); available: a, b, c."""
    return InputError(f"unknown {kind} {name!r}{suggestion(name, valid)}")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one `kind` by name; `register` adds one, `lookup`/`build` refuse unknown names clearly."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, entry: T, name: str | None = None) -> T:
        """Add `entry` under `name` (default: its `name` attribute) and return it, so a class decorator;
        a name can be taken once."""
        name = getattr(entry, "name", None) if name is None else name
        if not name:
            raise UsageError(f"a {self.kind} needs a name to be registered")
        if name in self._entries:
            raise UsageError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def lookup(self, name: str) -> T:
        """The entry called `name`; an unknown name is one InputError naming the nearest valid one."""
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """`lookup(name)(*args, **kwargs)`: an instance of the registered class."""
        factory: Callable[..., Any] = self.lookup(name)  # type: ignore[assignment]
        return factory(*args, **kwargs)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
