"""The converged regime's plateau check and decision (fishertune.benchmark.regime) against hand-computed
answers."""

import statistics

import pytest

from fishertune.benchmark.regime import STEP_CAP, decision, plateau, regime_notes


def curve(values, every=80):
    return [[every * (i + 1), v] for i, v in enumerate(values)]


def test_plateau_compares_the_seed_mean_at_the_end_with_the_point_at_three_quarters():
    a = curve([10, 20, 30, 40, 44, 46, 47, 47.2])  # steps 80 ... 640; 3/4 of 640 is 480 (the 6th point)
    b = curve([12, 22, 31, 41, 45, 45, 46.8, 46.6])
    found = plateau([a, b], 600)
    assert found["from_step"] == 480 and found["to_step"] == 640
    assert found["mean_from"] == pytest.approx((46 + 45) / 2)
    assert found["gain"] == pytest.approx((47.2 + 46.6) / 2 - (46 + 45) / 2, abs=0.01)  # 1.4
    assert found["plateaued"] is False
    flat = plateau([curve([10, 20, 30, 40, 44, 46, 46.2, 46.3]), curve([10, 20, 30, 40, 44, 45, 45.1, 45.4])],
                   600)
    assert flat["gain"] == pytest.approx(0.35) and flat["plateaued"] is True


def test_plateau_needs_two_seeds_with_the_same_steps():
    assert plateau([curve([1, 2])], 600) is None
    assert plateau([curve([1, 2]), curve([1, 2], every=50)], 600) is None
    assert plateau([curve([1]), curve([2])], 600) is None


def test_decision_is_the_gain_of_full_over_frozen_against_twice_the_larger_seed_std():
    full, frozen = [24.0, 25.0], [21.0, 21.2]
    found = decision(full, frozen)
    s = max(statistics.stdev(full), statistics.stdev(frozen))  # 0.707
    assert found["full_minus_frozen"] == pytest.approx(24.5 - 21.1)
    assert found["threshold"] == pytest.approx(2 * s, abs=0.01)
    assert found["fine_tuning_costs_nothing"] is True
    # a gain within twice the noise, or under one point however quiet the seeds, decides "run it"
    assert decision([23.0, 27.0], [21.0, 21.2])["fine_tuning_costs_nothing"] is False
    quiet = decision([21.9, 21.9], [21.0, 21.0])
    assert quiet["threshold"] == 1.0 and quiet["fine_tuning_costs_nothing"] is False
    assert decision([24.0], [21.0]) is None


def test_notes_say_what_was_decided_and_that_it_is_provisional_before_a_plateau():
    rising = [curve([1, 5, 9, 12]), curve([1, 5, 9, 12])]
    checks = {"plateau": plateau(rising, 600), "decision": decision([24.0, 25.0], [21.0, 21.2])}
    plateau_note, decision_note = regime_notes(checks)
    assert "+3.00 points" in plateau_note and "doubled" in plateau_note
    assert decision_note.startswith("Provisional") and "+3.40" in decision_note
    assert "not run in it" in decision_note
    assert regime_notes({}) == []


def test_a_schedule_whose_doubling_passes_the_cap_is_the_regimes_without_a_plateau():
    rising = [curve([1, 5, 9, 12], every=310), curve([1, 5, 9, 12], every=310)]
    assert plateau(rising, STEP_CAP // 2)["at_cap"] is False
    capped = plateau(rising, STEP_CAP)
    assert capped["at_cap"] is True and capped["plateaued"] is False
    plateau_note, decision_note = regime_notes({"plateau": capped,
                                                "decision": decision([21.5, 21.0], [21.0, 21.2])})
    assert "doubled" not in plateau_note and f"{STEP_CAP:,} is the regime's schedule" in plateau_note
    assert decision_note.startswith("Made at the capped schedule") and "comparison is run" in decision_note
