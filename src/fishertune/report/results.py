"""What every report function reads from a results dict (results.json, `fishertune.run_result`): the
per-method `RunResult`s, and their metrics by key and seed.

A method's numbers are its own fields or, when it lists "seeds", the per-seed values: statistics use the
per-seed values only and pair seeds by their "seed" field (by position when absent); the method's own
fields then serve single-number columns (trainable_params, train_seconds) when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fishertune.errors import FisherTuneError
from fishertune.run_result import RunResult, methods_from_json

SOURCE = "source_miou"
MEAN_TARGET = "mean_target_miou"
TARGET_PREFIX = "target_miou/"


def methods_of(results: Mapping[str, Any]) -> dict[str, RunResult]:
    """The per-method results, in the order given."""
    return methods_from_json(results)


def target_domains(results: Mapping[str, Any]) -> list[str]:
    """Every target domain any method was evaluated on, in first-seen order."""
    domains: dict[str, None] = {}
    for result in methods_of(results).values():
        for run in [result, *(result.seeds or [])]:
            domains.update(dict.fromkeys(run.target_miou))
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


def _value(run: RunResult, key: str) -> float | None:
    if key == MEAN_TARGET:
        if run.mean_target_miou is not None:
            return float(run.mean_target_miou)
        return float(np.mean(list(run.target_miou.values()))) if run.target_miou else None
    if key.startswith(TARGET_PREFIX):
        value = run.target_miou.get(key.removeprefix(TARGET_PREFIX))
    else:
        value = getattr(run, key)
    return None if value is None else float(value)


def seed_runs(result: RunResult) -> list[RunResult]:
    """The per-seed results, or the result itself as the only run."""
    return list(result.seeds or [result])


def values_by_seed(result: RunResult, key: str) -> dict:
    """seed -> value of a metric key (SOURCE, MEAN_TARGET, TARGET_PREFIX+domain or any numeric field
    such as "train_seconds"); a run without a seed is keyed by its position, and runs without the metric
    are left out."""
    out = {}
    for i, run in enumerate(seed_runs(result)):
        seed = i if run.seed is None else run.seed
        if seed in out:
            raise FisherTuneError(f"seed {seed!r} appears twice in one method's results")
        value = _value(run, key)
        if value is not None:
            out[seed] = value
    return out


def values(result: RunResult, key: str) -> list[float]:
    """The per-seed values of a metric key ([] when no run has it, e.g. a domain not evaluated)."""
    return list(values_by_seed(result, key).values())


def summary_value(result: RunResult, key: str) -> float | None:
    """The result's own value of a field, else the mean over its seeds, else None."""
    value = _value(result, key)
    if value is not None:
        return value
    per_seed = values(result, key)
    return float(np.mean(per_seed)) if per_seed else None


def num_seeds(results: Mapping[str, Any]) -> int:
    """The largest number of seeds of any method."""
    return max(len(seed_runs(r)) for r in methods_of(results).values())
