"""Strict dataclasses from plain dictionaries: the one check of run configs and method options.

`from_dict(cls, raw, where)` builds `cls(**raw)` after checking every key and value:
- an unknown key is an error naming it and the nearest valid key;
- each value must fit the field's type hint (bool, int, float, str, Literal, list[...], dict, X | None);
  an int is accepted for a float, and a numeric string too (YAML 1.1 reads `5e-2` as a string);
- numbers must be finite, and within the field's `metadata["min"]` / `metadata["max"]` (inclusive);
- nested dataclasses are built recursively;
- a key the class has renamed (its `RENAMED` mapping, old name → new) is read under its new name with a
  FutureWarning, so saved configs and run folders written before a rename still load.
Every error is one InputError line naming the full key (`where.key`), the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from collections.abc import Iterable
from typing import Any, Literal

from fishertune.errors import InputError
from fishertune.registry import did_you_mean


def at_least(minimum: float, **metadata: Any) -> dict:
    """Field metadata: the value must be >= minimum (None always passes)."""
    return {"min": minimum, **metadata}


def between(minimum: float, maximum: float, **metadata: Any) -> dict:
    """Field metadata: minimum <= value <= maximum (None always passes)."""
    return {"min": minimum, "max": maximum, **metadata}


def from_dict(cls: type, raw: Any, where: str = "") -> Any:
    """`cls(**raw)` with every key and value checked (see the module docstring)."""
    if not isinstance(raw, dict):
        raise InputError(f"{where or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    raw = renamed_keys(cls, raw, where)
    values = {}
    for key, value in raw.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise InputError(f"unknown config key {name!r}{suggest(str(key), fields, where)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = from_dict(hint, value, name)
        else:
            values[key] = check_range(check_type(value, hint, name), fields[key].metadata, name)
    return cls(**values)


def renamed_keys(cls: type, raw: dict, where: str = "") -> dict:
    """`raw` with the keys `cls.RENAMED` maps (old → new) under their new names, each with a FutureWarning;
    giving both names is an error."""
    renamed = getattr(cls, "RENAMED", {})
    if not renamed.keys() & raw.keys():
        return raw
    prefix = f"{where}." if where else ""
    out = {}
    for key, value in raw.items():
        new = renamed.get(key)
        if new is None:
            out[key] = value
            continue
        if new in raw or new in out:
            raise InputError(f"{prefix}{key} is the old name of {prefix}{new}: give only {prefix}{new}")
        warnings.warn(f"{prefix}{key} is now called {prefix}{new} (the old name is read until 0.2)",
                      FutureWarning, stacklevel=3)
        out[new] = value
    return out


def suggest(key: str, valid: Iterable[str], where: str = "") -> str:
    """' (did you mean 'where.x'?)' for the nearest valid key, else the list of valid keys."""
    valid = list(valid)
    hint = did_you_mean(key, valid, prefix=f"{where}." if where else "", cutoff=0.5)
    return hint or f"; valid keys{' in ' + where if where else ''}: {', '.join(valid)}"


def check_range(value: Any, metadata: typing.Mapping, name: str) -> Any:
    """`value` if it is within metadata's min/max (a list: each element is)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_range(item, metadata, f"{name}[{i}]")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    low, high = metadata.get("min"), metadata.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            expected = f">= {low}"
        elif low is None:
            expected = f"<= {high}"
        else:
            expected = f"in [{low}, {high}]"
        raise InputError(f"{name} must be {expected}, got {value!r}")
    return value


def check_type(value: Any, hint: Any, name: str) -> Any:
    """`value` if it fits the type `hint` (floats also accept ints and numeric strings); numbers finite."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return check_type(value, option, name)
            except InputError:
                continue
        raise InputError(f"{name} must be {describe(hint)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        hint_text = did_you_mean(str(value), [str(a) for a in args], cutoff=0.5)
        raise InputError(f"{name} must be one of {', '.join(map(str, args))}, got {value!r}{hint_text}")
    if hint is list or origin is list:
        if not isinstance(value, list):
            raise InputError(f"{name} must be a list, got {value!r}")
        return [check_type(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)] if args else value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{name} must be a mapping, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        number = value
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            if not math.isfinite(number):
                raise InputError(f"{name} must be a finite number, got {value!r}")
            return float(number)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # a type this checker does not know: the dataclass checks it
        return value
    raise InputError(f"{name} must be {describe(hint)}, got {value!r}")


def describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args) + (" or null" if len(args) < len(typing.get_args(hint))
                                                          else "")
    if typing.get_origin(hint) is list:
        return f"a list of {describe(args[0])}" if args else "a list"
    if typing.get_origin(hint) is typing.Literal:
        return f"one of {', '.join(map(str, args))}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             list: "a list"}
    return names.get(hint, str(hint))
