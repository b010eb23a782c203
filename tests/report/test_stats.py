"""Seed statistics against numpy/scipy on fabricated numbers."""

import numpy as np
import pytest
import torch
from scipy.stats import ttest_rel

from fishertune.engine.metrics import ConfusionMatrix, per_image_counts
from fishertune.errors import FisherTuneError
from fishertune.report import results as R
from fishertune.report.stats import (
    bootstrap_intervals,
    default_ours,
    holm,
    paired_differences,
    paired_test,
    summarize,
    verdict,
)

# The fixture's per-seed values, written out by seed 0, 1, 2.
OURS_NIGHT = [40.0, 41.0, 45.0]
FULL_NIGHT = [38.0, 33.0, 30.0]
OURS_FOG = [50.0, 52.0, 51.0]
FULL_FOG = [47.0, 48.0, 49.0]


def test_mean_and_sample_std_per_method_and_domain(multi_seed_results):
    summary = summarize(multi_seed_results)
    night = summary["fishertune"][R.TARGET_PREFIX + "night"]
    assert night.mean == pytest.approx(np.mean(OURS_NIGHT))
    assert night.std == pytest.approx(np.std(OURS_NIGHT, ddof=1))
    assert night.n == 3
    mean_target = summary["full"][R.MEAN_TARGET]
    assert mean_target.mean == pytest.approx(np.mean((np.array(FULL_FOG) + FULL_NIGHT) / 2))


def test_single_seed_has_zero_std(single_seed_results):
    source = summarize(single_seed_results)["lora"][R.SOURCE]
    assert (source.mean, source.std, source.n) == (71.0, 0.0, 1)


def test_paired_differences_pair_by_seed_and_match_scipy(multi_seed_results):
    diffs = {(d.baseline, d.key): d for d in paired_differences(multi_seed_results)}
    night = diffs["full", R.TARGET_PREFIX + "night"]
    expected = np.array(OURS_NIGHT) - FULL_NIGHT  # full's seeds are stored in the order 2, 0, 1
    assert night.seeds == [0, 1, 2]
    np.testing.assert_allclose(night.differences, expected)
    assert night.mean == pytest.approx(expected.mean())
    assert night.std == pytest.approx(expected.std(ddof=1))
    assert night.p_value == pytest.approx(ttest_rel(OURS_NIGHT, FULL_NIGHT).pvalue)
    assert night.wins == 3
    fog = diffs["full", R.TARGET_PREFIX + "fog"]
    assert fog.p_value == pytest.approx(ttest_rel(OURS_FOG, FULL_FOG).pvalue)
    assert {d.baseline for d in diffs.values()} == {"full", "frozen"}


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.4]) == pytest.approx([0.8, None, 0.8])  # None is left out of the family
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_noise_verdict_follows_the_holm_adjusted_p_value(multi_seed_results):
    diffs = paired_differences(multi_seed_results, alpha=0.05)
    for diff in diffs:
        family = [d for d in diffs if d.key == diff.key]  # ours vs each baseline on one metric
        assert diff.p_holm == pytest.approx(holm([d.p_value for d in family])[family.index(diff)])
        assert diff.p_holm >= diff.p_value
        assert diff.exceeds_noise == (diff.p_holm < 0.05)
        assert ("exceeds seed noise" in verdict(diff)) == diff.exceeds_noise
        assert f"Holm-adjusted {diff.p_holm:.3g}" in verdict(diff)
    source = {d.baseline: d for d in paired_differences(multi_seed_results, keys=[R.SOURCE])}["full"]
    # ours 70, 71, 69 vs full 70.5, 70, 72: mixed signs -> within noise
    assert source.wins == 1 and not source.exceeds_noise
    assert "within seed noise" in verdict(source)


def test_only_common_seeds_are_paired_and_one_seed_gives_no_verdict(multi_seed_results):
    full = multi_seed_results["methods"]["full"]
    full["seeds"] = full["seeds"][:1]  # seed 2 only
    diff = {d.baseline: d for d in paired_differences(multi_seed_results, keys=[R.SOURCE])}["full"]
    assert diff.seeds == [2] and diff.differences == [69.0 - 72.0]
    assert diff.p_value is None and diff.exceeds_noise is None
    assert "one seed" in verdict(diff)


def test_constant_differences_need_no_t_test():
    assert paired_test([2.0, 2.0, 2.0]) == 0.0
    assert paired_test([0.0, 0.0]) == 1.0
    assert paired_test([1.0]) is None


def test_duplicate_seeds_and_unknown_methods_are_clear_errors(multi_seed_results):
    with pytest.raises(FisherTuneError, match="not-a-method"):
        paired_differences(multi_seed_results, ours="not-a-method")
    seeds = multi_seed_results["methods"]["full"]["seeds"]
    seeds[1] = {**seeds[1], "seed": seeds[0]["seed"]}
    with pytest.raises(FisherTuneError, match="twice"):
        paired_differences(multi_seed_results)


def test_default_ours():
    assert default_ours({"methods": {"lora": {"seeds": []}, "fishertune_noperturb": {"seeds": []}}}) == \
        "fishertune_noperturb"
    with pytest.raises(FisherTuneError, match="lora"):
        default_ours({"methods": {"lora": {"seeds": []}}})


def _images(rng, n, classes=4, size=6):
    """n random (prediction, label) pairs, labels with some ignored pixels and some classes absent."""
    labels = rng.integers(0, classes - 1, size=(n, size, size))  # the last class never occurs as a label
    labels[rng.random(labels.shape) < 0.1] = 255
    predictions = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, classes, labels.shape))
    predictions[labels == 255] = rng.integers(0, classes, int((labels == 255).sum()))
    return torch.as_tensor(predictions), torch.as_tensor(labels)


def test_bootstrap_intervals_against_brute_force_confusion_matrices():
    rng = np.random.default_rng(3)
    classes, n, resamples = 4, 5, 200
    domains = {"fog": [_images(rng, n) for _ in range(2)], "night": [_images(rng, n) for _ in range(2)]}
    counts = {d: [tuple(c.numpy() for c in per_image_counts(p, y, classes)) for p, y in runs]
              for d, runs in domains.items()}
    found = bootstrap_intervals(counts, resamples=resamples, seed=7, level=0.9)
    # brute force: the documented draws, each resample's pooled confusion matrix built from the images
    draws = np.random.default_rng(7)
    per_domain = {}
    for domain, runs in domains.items():
        picks = draws.integers(0, n, size=(resamples, n))
        means = []
        for pick in picks:
            mious = []
            for predictions, labels in runs:  # every seed on the same resample
                matrix = ConfusionMatrix(classes)
                for i in pick:
                    matrix.update(predictions[i], labels[i])
                mious.append(matrix.miou())
            means.append(np.mean(mious))
        per_domain[domain] = np.array(means)
        assert found[domain] == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])), abs=1e-9)
    mean_target = (per_domain["fog"] + per_domain["night"]) / 2
    assert found[R.MEAN_TARGET] == pytest.approx(tuple(np.quantile(mean_target, [0.05, 0.95])), abs=1e-9)
    # and the counts of all images pooled give the plain confusion-matrix mIoU
    predictions, labels = domains["fog"][0]
    matrix = ConfusionMatrix(classes)
    matrix.update(predictions, labels)
    intersection, union = counts["fog"][0]
    pooled = intersection.sum(0) / np.where(union.sum(0) > 0, union.sum(0), np.nan)
    assert 100 * np.nanmean(pooled) == pytest.approx(matrix.miou())


def test_bootstrap_needs_the_same_images_for_every_seed():
    a = (np.ones((3, 2), dtype=np.int64), np.ones((3, 2), dtype=np.int64))
    b = (np.ones((4, 2), dtype=np.int64), np.ones((4, 2), dtype=np.int64))
    with pytest.raises(FisherTuneError, match="same images"):
        bootstrap_intervals({"fog": [a, b]})
    with pytest.raises(FisherTuneError, match="level"):
        bootstrap_intervals({"fog": [a]}, level=1.5)
