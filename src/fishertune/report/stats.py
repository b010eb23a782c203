"""Seed statistics: mean ± std per method and metric, and paired differences of one method vs the rest.

Test used: the two-sided paired t-test (`scipy.stats.ttest_rel`) on the per-seed differences
d_s = ours_s − baseline_s over the seeds both methods ran. A difference "exceeds seed noise" when
p < alpha (0.05 by default); with one common seed nothing can be said. Stds are sample stds (ddof=1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from fishertune.errors import FisherTuneError
from fishertune.report import results as R


@dataclass(frozen=True)
class Summary:
    """Mean and sample std (0 for a single seed) over n seeds."""

    mean: float
    std: float
    n: int


def summarize_values(values: list[float]) -> Summary | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return Summary(float(array.mean()), std, int(array.size))


def summarize(results: Mapping[str, Any]) -> dict[str, dict[str, Summary | None]]:
    """method -> metric key (results.metric_keys) -> Summary over seeds (None when not evaluated)."""
    keys = R.metric_keys(results)
    return {name: {key: summarize_values(R.values(entry, key)) for key in keys}
            for name, entry in R.methods_of(results).items()}


@dataclass(frozen=True)
class PairedDifference:
    """ours − baseline on one metric, paired by seed."""

    ours: str
    baseline: str
    key: str
    seeds: list
    differences: list[float]
    mean: float
    std: float
    wins: int  # seeds where ours is strictly higher
    p_value: float | None  # None with fewer than 2 paired seeds
    exceeds_noise: bool | None

    @property
    def n(self) -> int:
        return len(self.differences)


def paired_test(differences: list[float]) -> float | None:
    """Two-sided paired t-test p-value of the differences' mean against 0 (None for n < 2). Constant
    differences have zero variance: p = 1 when they are all 0, else 0 (t is infinite)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return None
    if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):
        return 1.0 if np.all(d == 0) else 0.0
    return float(scipy_stats.ttest_rel(d, np.zeros_like(d)).pvalue)


def default_ours(results: Mapping[str, Any]) -> str:
    """"fishertune" when present, else the first method whose name starts with it."""
    names = list(R.methods_of(results))
    if "fishertune" in names:
        return "fishertune"
    for name in names:
        if name.lower().startswith("fishertune"):
            return name
    raise FisherTuneError(f"no FisherTune method in results; methods: {', '.join(names)}")


def paired_differences(results: Mapping[str, Any], ours: str | None = None, alpha: float = 0.05,
                       keys: list[str] | None = None) -> list[PairedDifference]:
    """ours − every other method on each metric key (default: all mIoU columns), over common seeds."""
    methods = R.methods_of(results)
    ours = ours or default_ours(results)
    if ours not in methods:
        raise FisherTuneError(f"unknown method {ours!r}; methods: {', '.join(methods)}")
    out = []
    for baseline, entry in methods.items():
        if baseline == ours:
            continue
        for key in keys or R.metric_keys(results):
            mine, theirs = R.values_by_seed(methods[ours], key), R.values_by_seed(entry, key)
            seeds = [s for s in mine if s in theirs]
            if not seeds:
                continue
            diffs = [mine[s] - theirs[s] for s in seeds]
            summary = summarize_values(diffs)
            p = paired_test(diffs)
            out.append(PairedDifference(
                ours, baseline, key, seeds, diffs, summary.mean, summary.std,
                wins=sum(d > 0 for d in diffs), p_value=p,
                exceeds_noise=None if p is None else p < alpha))
    return out


def verdict(diff: PairedDifference, alpha: float = 0.05) -> str:
    """The difference in words, with the per-seed values and whether it exceeds seed noise."""
    head = (f"{diff.ours} − {diff.baseline} on {R.metric_label(diff.key)} mIoU: {diff.mean:+.2f}")
    if diff.p_value is None:
        return f"{head} on one seed only: one seed cannot separate a difference from seed noise."
    per_seed = ", ".join(f"{d:+.2f}" for d in diff.differences)
    noise = "exceeds seed noise" if diff.exceeds_noise else "within seed noise"
    return (f"{head} ± {diff.std:.2f} over {diff.n} paired seeds (per seed: {per_seed}); "
            f"{diff.ours} higher in {diff.wins}/{diff.n}; paired t-test p = {diff.p_value:.3g} → "
            f"{noise} (α = {alpha:g}).")
