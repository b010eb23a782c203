"""benchmarks/ablation_pairs.py on the committed full comparison, against scipy's paired t-test and Holm's
adjustment written out here."""

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from ablation_pairs import merged, pairs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "demo_full_2026-11-30" / "results.json"


def test_every_pair_matches_scipy_and_a_step_down_holm():
    results = json.loads(RESULTS.read_text())
    names = ["fishertune", "random-select", "fim-select", "deltaf-select"]
    seeds = {n: {run["seed"]: run["mean_target_miou"] for run in results["methods"][n]["seeds"]}
             for n in names}
    expected = {}
    for a, b in itertools.combinations(names, 2):
        x, y = (np.array([seeds[n][s] for s in sorted(seeds[a])]) for n in (a, b))
        if (x - y).mean() < 0:
            a, b, x, y = b, a, y, x
        expected[a, b] = (x - y, stats.ttest_rel(x, y).pvalue)
    order = sorted(expected, key=lambda k: expected[k][1])
    m, running, holm = len(order), 0.0, {}
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * expected[key][1]))
        holm[key] = running
    rows = pairs(results, names)
    assert [(d.ours, d.baseline) for d, _ in rows] == order
    for d, jaccard in rows:
        diffs, p = expected[d.ours, d.baseline]
        np.testing.assert_allclose(d.differences, diffs, atol=1e-12)
        assert abs(d.p_value - p) < 1e-12 and abs(d.p_holm - holm[d.ours, d.baseline]) < 1e-12
        assert jaccard == results["selections"]["variants"][d.ours]["overlap"][d.baseline]


def test_results_files_are_read_side_by_side_and_a_conflicting_variant_is_refused(tmp_path):
    results = json.loads(RESULTS.read_text())
    methods = results["methods"]
    added = {"methods": {"fishertune": methods["fishertune"], "copy": methods["fim-select"]}}
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(results))
    second.write_text(json.dumps(added))
    both = merged([str(first), str(second)])
    assert list(both["methods"]) == [*methods, "copy"]
    ((diff, jaccard),) = pairs(both, ["copy", "fim-select"])
    assert diff.differences == [0.0] * 5 and diff.p_value == 1.0 and jaccard is None
    added["methods"]["fishertune"] = methods["fim-select"]
    second.write_text(json.dumps(added))
    with pytest.raises(SystemExit, match="'fishertune' differs"):
        merged([str(first), str(second)])
