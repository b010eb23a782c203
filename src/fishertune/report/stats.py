"""Seed statistics: mean ± std per method and metric, paired differences of one method vs the rest, and
bootstrap intervals over test images.

Test used: the two-sided paired t-test (`scipy.stats.ttest_rel`) on the per-seed differences
d_s = ours_s − baseline_s over the seeds both methods ran. The p-values of one metric (ours against every
baseline) form one family and are Holm-adjusted (`holm`); a difference "exceeds seed noise" when its
adjusted p < alpha (0.05 by default). With one common seed nothing can be said. Stds are sample stds
(ddof=1).

Seeds measure training noise only; the test images are a sample too. `bootstrap_intervals` resamples
them: percentile intervals of the mean over seeds of a domain's mIoU, from per-image intersection and
union counts (see `fishertune.engine.metrics.per_image_counts`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from fishertune.errors import FisherTuneError
from fishertune.report.results import (
    MEAN_TARGET,
    methods_of,
    metric_keys,
    metric_label,
    values,
    values_by_seed,
)


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
    keys = metric_keys(results)
    return {name: {key: summarize_values(values(entry, key)) for key in keys}
            for name, entry in methods_of(results).items()}


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
    exceeds_noise: bool | None  # Holm-adjusted p < alpha
    p_holm: float | None = None  # p_value Holm-adjusted over the baselines of this metric

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


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are left out and stay None).

    With the m p-values sorted, p_(1) <= ... <= p_(m):
    adjusted p_(i) = max_{j <= i} min(1, (m − j + 1)·p_(j)).
    Rejecting where the adjusted p < alpha bounds the chance of any false rejection in the family by alpha.
    """
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted


def default_ours(results: Mapping[str, Any]) -> str:
    """"fishertune" when present, else the first method whose name starts with it."""
    names = list(methods_of(results))
    if "fishertune" in names:
        return "fishertune"
    for name in names:
        if name.lower().startswith("fishertune"):
            return name
    raise FisherTuneError(f"no FisherTune method in results; methods: {', '.join(names)}")


def paired_difference(methods: Mapping[str, Any], ours: str, baseline: str, key: str
                      ) -> PairedDifference | None:
    """ours − baseline on one metric key over their common seeds, with the raw paired t-test p (not
    adjusted: p_holm and exceeds_noise are None); None without a common seed. `methods`: methods_of()."""
    mine, theirs = values_by_seed(methods[ours], key), values_by_seed(methods[baseline], key)
    seeds = [s for s in mine if s in theirs]
    if not seeds:
        return None
    diffs = [mine[s] - theirs[s] for s in seeds]
    summary = summarize_values(diffs)
    return PairedDifference(ours, baseline, key, seeds, diffs, summary.mean, summary.std,
                            wins=sum(d > 0 for d in diffs), p_value=paired_test(diffs), exceeds_noise=None)


def paired_differences(results: Mapping[str, Any], ours: str | None = None, alpha: float = 0.05,
                       keys: list[str] | None = None) -> list[PairedDifference]:
    """ours − every other method on each metric key (default: all mIoU columns), over common seeds; the
    p-values of each key are Holm-adjusted over the baselines."""
    methods = methods_of(results)
    ours = ours or default_ours(results)
    if ours not in methods:
        raise FisherTuneError(f"unknown method {ours!r}; methods: {', '.join(methods)}")
    out = []
    for baseline in methods:
        if baseline == ours:
            continue
        for key in keys or metric_keys(results):
            diff = paired_difference(methods, ours, baseline, key)
            if diff is not None:
                out.append(diff)
    for key in {d.key for d in out}:
        family = [i for i, d in enumerate(out) if d.key == key]
        for i, adjusted in zip(family, holm([out[i].p_value for i in family])):
            out[i] = dataclasses.replace(out[i], p_holm=adjusted,
                                         exceeds_noise=None if adjusted is None else adjusted < alpha)
    return out


def verdict(diff: PairedDifference, alpha: float = 0.05) -> str:
    """The difference in words, with the per-seed values and whether it exceeds seed noise."""
    head = (f"{diff.ours} − {diff.baseline} on {metric_label(diff.key)} mIoU: {diff.mean:+.2f}")
    if diff.p_value is None:
        return f"{head} on one seed only: one seed cannot separate a difference from seed noise."
    per_seed = ", ".join(f"{d:+.2f}" for d in diff.differences)
    noise = "exceeds seed noise" if diff.exceeds_noise else "within seed noise"
    return (f"{head} ± {diff.std:.2f} over {diff.n} paired seeds (per seed: {per_seed}); "
            f"{diff.ours} higher in {diff.wins}/{diff.n}; paired t-test p = {diff.p_value:.3g}, "
            f"Holm-adjusted {diff.p_holm:.3g} → {noise} (α = {alpha:g}).")


Counts = tuple[np.ndarray, np.ndarray]
"""Per-image (intersection, union) of one run on one domain: int arrays [images, classes]."""


def pooled_miou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU in percent of pooled counts [..., classes]: the mean of Σ∩/Σ∪ over the classes whose pooled
    union is not 0 (as `ConfusionMatrix.miou`); NaN where no class occurs."""
    present = union > 0
    iou = np.divide(intersection, union, out=np.zeros(np.shape(union)), where=present)
    with np.errstate(invalid="ignore"):
        return 100 * iou.sum(-1) / present.sum(-1)


def resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, n]: how often each of n images is drawn in each resample of n with replacement (the
    draws are rng.integers(0, n, (resamples, n)))."""
    draws = rng.integers(0, n, size=(resamples, n))
    rows = np.arange(resamples)[:, None] * n
    return np.bincount((draws + rows).ravel(), minlength=resamples * n).reshape(resamples, n)


def bootstrap_intervals(per_domain: Mapping[str, list[Counts]], resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap over test images of each domain's mean over seeds of mIoU, and of their mean.

    `per_domain[domain]` holds one (intersection, union) per seed, all over the same images. Resample b
    draws the images of each domain with replacement (`resample_weights`, from
    np.random.default_rng(seed), domains in the given order); every seed's mIoU is computed on that same
    draw, so the interval shows the test-image noise of the seed mean, not the seed noise again. Returns
    {domain: (low, high), results.MEAN_TARGET: (low, high)} in mIoU percent."""
    if not 0 < level < 1:
        raise FisherTuneError(f"bootstrap level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    tails = [(1 - level) / 2, 1 - (1 - level) / 2]
    means: dict[str, np.ndarray] = {}
    for domain, runs in per_domain.items():
        sizes = {counts.shape for run in runs for counts in run}
        if len(sizes) != 1:
            raise FisherTuneError(f"bootstrap: the per-image counts of {domain} differ in shape or are "
                                  f"missing; every seed must cover the same images")
        weights = resample_weights(next(iter(sizes))[0], resamples, rng).astype(np.float64)
        means[domain] = np.mean([pooled_miou(weights @ i, weights @ u) for i, u in runs], axis=0)
    if means:
        means[MEAN_TARGET] = np.mean(list(means.values()), axis=0)
    return {key: tuple(float(q) for q in np.quantile(values, tails)) for key, values in means.items()}
