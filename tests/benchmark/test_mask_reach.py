"""benchmarks/mask_reach.py against shares counted by hand, and on a committed record."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from mask_reach import final_masks, reach  # noqa: E402


def test_reach_pools_rows_and_columns_over_the_matrices_and_ignores_vectors():
    a = np.zeros((4, 3), bool)
    a[0, 0] = a[0, 2] = a[3, 2] = True  # rows 0, 3 (2 of 4); columns 0, 2 (2 of 3)
    b = np.zeros((2, 5), bool)
    b[1, 4] = True  # row 1 (1 of 2); column 4 (1 of 5)
    rows, cols, density = reach({"a": a, "b": b, "bias": np.ones(7, bool)})
    assert rows == pytest.approx(3 / 6) and cols == pytest.approx(3 / 8)
    assert density == pytest.approx(4 / 22)


def test_a_random_five_percent_mask_reaches_every_row_of_dinov2_s():
    out = ROOT / "benchmarks" / "results" / "ablation_2026-12-06"
    rows, cols, density = reach(final_masks(out, "random-select", 1))
    # a row of ≥ 384 entries at 5% misses every one with probability 0.95^384 ≈ 3e-9
    assert rows == 1.0 and cols == 1.0 and density == pytest.approx(0.05, abs=0.002)
