"""Seed statistics against numpy/scipy on fabricated numbers."""

import numpy as np
import pytest
from scipy.stats import ttest_rel

from fishertune.errors import FisherTuneError
from fishertune.report import results as R
from fishertune.report.stats import default_ours, paired_differences, paired_test, summarize, verdict

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


def test_noise_verdict_follows_the_p_value(multi_seed_results):
    for diff in paired_differences(multi_seed_results, alpha=0.05):
        assert diff.exceeds_noise == (diff.p_value < 0.05)
        assert ("exceeds seed noise" in verdict(diff)) == diff.exceeds_noise
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
