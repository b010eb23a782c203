"""Per-cell aggregation of scores and masks against hand-computed numbers."""

import numpy as np
import pytest
import torch

from fishertune.errors import FisherTuneError
from fishertune.report.breakdown import (
    aggregate_scores,
    block_shares,
    count_selection,
    score_grid,
    selection_overlap,
    selection_rows,
)

SCORES = {
    "embeddings.cls_token": torch.tensor([[[4.0, 8.0]]]),
    "encoder.layer.0.attention.q_proj.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
    "encoder.layer.0.attention.q_proj.bias": torch.tensor([10.0, 20.0]),
    "encoder.layer.0.mlp.fc1.weight": torch.tensor([[0.5, 1.5, 2.5]]),
    "encoder.layer.1.attention.q_proj.weight": torch.tensor([[6.0]]),
    "encoder.layer.1.attention.k_proj.weight": np.array([[0.0, 0.0]]),  # numpy input works too
}


def test_mean_is_pooled_over_entries_not_tensors():
    cells = aggregate_scores(SCORES)
    assert cells[(0, "Q")] == pytest.approx((1 + 2 + 3 + 4 + 10 + 20) / 6)  # not (2.5 + 15) / 2
    assert cells[(0, "FFN")] == pytest.approx(1.5)
    assert cells[(None, "embeddings")] == pytest.approx(6.0)
    assert cells[(1, "K")] == 0.0
    assert aggregate_scores(SCORES, reduce="sum")[(0, "Q")] == pytest.approx(40.0)
    assert aggregate_scores(SCORES, reduce="max")[(0, "Q")] == 20.0


def test_score_grid_layout_and_missing_cells():
    rows, cols, grid = score_grid(SCORES)
    assert rows == [None, 0, 1]
    assert cols == ["embeddings", "Q", "K", "FFN"]
    expected = np.array([[6.0, np.nan, np.nan, np.nan],
                         [np.nan, 40 / 6, np.nan, 1.5],
                         [np.nan, 6.0, 0.0, np.nan]])
    np.testing.assert_allclose(grid, expected)


def test_unknown_reduce_is_a_clear_error():
    with pytest.raises(FisherTuneError, match="mean, sum, max"):
        aggregate_scores(SCORES, reduce="median")


def test_selection_counts_equal_a_hand_count():
    masks = {
        "embeddings.cls_token": torch.tensor([True, True, False, False]),
        "encoder.layer.0.attention.q_proj.weight": torch.tensor([[True, False], [False, False]]),
        "encoder.layer.0.mlp.fc2.weight": torch.zeros(6, dtype=torch.bool),
        "encoder.layer.1.attention.q_proj.weight": torch.tensor([[True, True, True, False]]),
    }
    counts = count_selection(masks)
    assert (counts.selected, counts.total) == (6, 18)
    assert counts.global_ratio == pytest.approx(6 / 18)
    assert counts.by_type == {"embeddings": (2, 4), "Q": (4, 8), "FFN": (0, 6)}
    assert counts.by_block == {None: (2, 4), 0: (1, 10), 1: (3, 4)}
    assert counts.by_cell[(0, "Q")] == (1, 4)
    assert counts.by_cell[(1, "Q")] == (3, 4)


def test_global_ratio_is_the_expected_fraction_of_a_random_selection():
    """The analytic random baseline: a uniform random top-k takes, in expectation, the global ratio of
    every group's entries (checked here against the average of many random masks)."""
    shapes = {"encoder.layer.0.attention.q_proj.weight": (8, 8), "encoder.layer.1.mlp.fc1.weight": (4, 32),
              "embeddings.cls_token": (1, 1, 8)}
    total = sum(int(np.prod(s)) for s in shapes.values())
    k = 30
    generator = torch.Generator().manual_seed(0)
    fractions = []
    for _ in range(400):
        flat = torch.zeros(total, dtype=torch.bool)
        flat[torch.randperm(total, generator=generator)[:k]] = True
        masks, start = {}, 0
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            masks[name] = flat[start:start + n].reshape(shape)
            start += n
        counts = count_selection(masks)
        fractions.append([s / t for s, t in counts.by_type.values()])
    assert counts.global_ratio == pytest.approx(k / total)
    np.testing.assert_allclose(np.mean(fractions, axis=0), k / total, atol=0.02)


def test_selection_rows_in_heatmap_order_with_fraction_and_share():
    masks = {
        "encoder.layer.1.mlp.fc1.weight": torch.tensor([True, True, True, False]),
        "encoder.layer.0.attention.q_proj.weight": torch.tensor([True, False]),
        "embeddings.cls_token": torch.tensor([False, False, False, False]),
    }
    assert selection_rows(masks) == [
        {"block": None, "module": "embeddings", "selected": 0, "total": 4, "fraction": 0.0, "share": 0.0},
        {"block": 0, "module": "Q", "selected": 1, "total": 2, "fraction": 0.5, "share": 0.25},
        {"block": 1, "module": "FFN", "selected": 3, "total": 4, "fraction": 0.75, "share": 0.75},
    ]


def test_block_shares_in_block_order_not_text_order():
    masks = {  # sorted by name, as a saved selection is: block 10 comes before block 2
        "embeddings.cls_token": torch.tensor([True, False]),
        "encoder.layer.10.mlp.fc1.weight": torch.tensor([True, True, True, False]),
        "encoder.layer.2.attention.q_proj.weight": torch.tensor([True, True, False, False]),
    }
    shares = block_shares(masks)
    assert list(shares) == ["outside", "2", "10"]
    assert shares == pytest.approx({"outside": 1 / 6, "2": 2 / 6, "10": 3 / 6})


def test_selection_overlap_is_the_jaccard_index():
    a = {"w": torch.tensor([True, True, False, False]), "b": torch.tensor([True, False])}
    b = {"w": torch.tensor([False, True, True, False]), "c": np.array([True])}  # "b" and "c": one side only
    # |A ∩ B| = 1 (w[1]); |A ∪ B| = 3 (w) + 1 (b) + 1 (c) = 5
    assert selection_overlap(a, b) == pytest.approx(1 / 5)
    assert selection_overlap(a, a) == 1.0 and selection_overlap(a, {}) == 0.0
    assert selection_overlap(a, {"w": torch.tensor([[False, True], [True, False]])}) == pytest.approx(1 / 4)
    with pytest.raises(FisherTuneError, match="differ in size"):
        selection_overlap(a, {"w": torch.ones(5, dtype=torch.bool)})


def test_random_selections_overlap_as_expected():
    generator = torch.Generator().manual_seed(0)
    n, p = 2_000_000, 0.05  # the overlap count is about 5,000: a relative spread of 1.4%
    a, b = ({"w": torch.rand(n, generator=generator) < p} for _ in range(2))
    assert selection_overlap(a, b) == pytest.approx(p / (2 - p), rel=0.05)
