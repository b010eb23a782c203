"""The results dict every report function reads: results.json (DESIGN.md §3) plus optional seeds.

Schema (mIoU in percent)::

    {
      "setup": {"backbone": ..., "data": ..., "steps": ..., "seeds": [...], ...},   # optional
      "methods": {
        "<method>": {
          "trainable_params": int, "source_miou": float, "target_miou": {"<domain>": float, ...},
          "mean_target_miou": float, "train_seconds": float,
          "seeds": [{"seed": int, <the same five fields>}, ...]   # optional, one dict per seed
        }, ...
      }
    }

A flat dict `{"<method>": {...}}` without "methods" is read the same way. When "seeds" is present,
statistics use the per-seed values only and pair seeds by their "seed" field (by position when absent);
top-level fields then serve single-number columns (trainable_params, train_seconds) when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fishertune.errors import FisherTuneError

SOURCE = "source_miou"
MEAN_TARGET = "mean_target_miou"
TARGET_PREFIX = "target_miou/"


def methods_of(results: Mapping[str, Any]) -> dict[str, dict]:
    """The per-method entries, in the order given."""
    methods = results.get("methods", None)
    if methods is None:
        methods = {k: v for k, v in results.items()
                   if isinstance(v, Mapping) and ("target_miou" in v or "seeds" in v)}
    if not methods:
        raise FisherTuneError("results hold no methods: expected results['methods'][name] with target_miou")
    return dict(methods)


def target_domains(results: Mapping[str, Any]) -> list[str]:
    """Every target domain any method was evaluated on, in first-seen order."""
    domains: dict[str, None] = {}
    for name, entry in methods_of(results).items():
        for run in [entry, *(entry.get("seeds") or [])]:
            if "target_miou" in run:
                if not isinstance(run["target_miou"], Mapping):
                    raise FisherTuneError(f"method {name!r}: target_miou must map domain -> mIoU")
                domains.update(dict.fromkeys(run["target_miou"]))
    return list(domains)


def metric_keys(results: Mapping[str, Any]) -> list[str]:
    """source, each target, mean target: the report's mIoU columns."""
    return [SOURCE, *(TARGET_PREFIX + d for d in target_domains(results)), MEAN_TARGET]


def metric_label(key: str) -> str:
    if key == SOURCE:
        return "source"
    if key == MEAN_TARGET:
        return "mean target"
    return key.removeprefix(TARGET_PREFIX)


def _value(run: Mapping[str, Any], key: str) -> float | None:
    if key == MEAN_TARGET:
        if run.get(MEAN_TARGET) is not None:
            return float(run[MEAN_TARGET])
        targets = run.get("target_miou") or {}
        return float(np.mean(list(targets.values()))) if targets else None
    if key.startswith(TARGET_PREFIX):
        value = (run.get("target_miou") or {}).get(key.removeprefix(TARGET_PREFIX))
    else:
        value = run.get(key)
    return None if value is None else float(value)


def seed_runs(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-seed dicts, or the entry itself as the only run."""
    return list(entry.get("seeds") or [entry])


def values_by_seed(entry: Mapping[str, Any], key: str) -> dict:
    """seed -> value of a metric key (SOURCE, MEAN_TARGET, TARGET_PREFIX+domain or any numeric field
    such as "train_seconds"); a run without a "seed" field is keyed by its position, and runs without
    the metric are left out."""
    out = {}
    for i, run in enumerate(seed_runs(entry)):
        seed = run.get("seed", i)
        if seed in out:
            raise FisherTuneError(f"seed {seed!r} appears twice in one method's results")
        value = _value(run, key)
        if value is not None:
            out[seed] = value
    return out


def values(entry: Mapping[str, Any], key: str) -> list[float]:
    """The per-seed values of a metric key ([] when no run has it, e.g. a domain not evaluated)."""
    return list(values_by_seed(entry, key).values())


def summary_value(entry: Mapping[str, Any], key: str) -> float | None:
    """The entry's own value of a field, else the mean over its seeds, else None."""
    value = _value(entry, key)
    if value is not None:
        return value
    per_seed = values(entry, key)
    return float(np.mean(per_seed)) if per_seed else None


def num_seeds(results: Mapping[str, Any]) -> int:
    """The largest number of seeds of any method."""
    return max(len(seed_runs(e)) for e in methods_of(results).values())
