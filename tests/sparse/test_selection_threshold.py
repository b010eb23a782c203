"""Threshold selection equals the sort-based selection it replaced (kept in selection_reference.py), bit for
bit: random and heavily tied scores, kept masks (growth), caps, scopes, granularities, include/exclude."""

import itertools
import math

import pytest
import torch
from selection_reference import reference_select_topk

from fishertune import FisherTuneError, select_topk

LOWEST = torch.finfo(torch.float32).min


def random_scores(seed, tied):
    g = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (6, 5), "a.bias": (6,), "b.weight": (4, 7), "c.weight": (3, 2, 2),
              "emb.token": (1, 1, 3), "scalar": ()}
    if tied:  # few distinct values, negative zero and the lowest float among them: ties everywhere
        values = torch.tensor([LOWEST, -0.0, 0.0, 0.5, 1.0, 2.0])
        return {n: values[torch.randint(0, 6, s, generator=g)] for n, s in shapes.items()}
    return {n: torch.randn(s, generator=g) for n, s in shapes.items()}


def random_keep(s, seed, fraction):
    g = torch.Generator().manual_seed(seed + 1000)
    # the larger tensors only, within a cap of 0.5 (a kept entry over the cap is an error)
    return {n: (torch.rand(t.shape, generator=g) < fraction) & (t.numel() >= 12) for n, t in s.items()}


CASES = list(itertools.product(range(3), [False, True], ["element", "row", "tensor"],
                               ["global", "per_tensor"], [None, 0.5], [0.0, 0.1]))


@pytest.mark.parametrize("seed,tied,granularity,scope,cap,kept", CASES)
def test_threshold_selection_equals_sort_reference(seed, tied, granularity, scope, cap, kept):
    s = random_scores(seed, tied)
    keep = random_keep(s, seed, kept) if kept else None
    n_total = sum(t.numel() for t in s.values())
    checked = 0
    options = dict(granularity=granularity, scope=scope, max_per_tensor=cap, keep=keep)
    for ratio in (0.0, 0.05, 0.2, 0.3, 0.37, 0.45, 0.5):
        try:
            expected = reference_select_topk(s, ratio=ratio, **options)
        except FisherTuneError:  # budget below the kept entries or above the caps: both must refuse
            with pytest.raises(FisherTuneError):
                select_topk(s, ratio=ratio, **options)
            continue
        got = select_topk(s, ratio=ratio, **options)
        assert got.keys() == expected.keys()
        for n in s:
            assert torch.equal(got[n], expected[n]), (n, ratio)
        checked += 1
    assert checked >= 2, n_total  # the comparison ran, not only the refusals


def test_threshold_selection_equals_reference_with_include_exclude_and_count():
    s = random_scores(7, tied=True)
    for count in (0, 1, 5, 13, 40):
        kwargs = dict(count=count, include=["a.*", "b.*", "c.*"], exclude=["*.bias"])
        expected = reference_select_topk(s, **kwargs)
        got = select_topk(s, **kwargs)
        assert all(torch.equal(got[n], expected[n]) for n in s), count


def test_threshold_selection_equals_reference_on_large_tensors():
    g = torch.Generator().manual_seed(3)
    s = {f"layer{i}.weight": (torch.rand(64, 200, generator=g) * 50).round() for i in range(5)}  # many ties
    keep = {n: torch.rand(t.shape, generator=g) < 0.01 for n, t in s.items()}
    for granularity in ("element", "row"):
        options = dict(ratio=0.05, granularity=granularity, keep=keep, max_per_tensor=0.08)
        got, expected = select_topk(s, **options), reference_select_topk(s, **options)
        assert all(torch.equal(got[n], expected[n]) for n in s), granularity


def test_threshold_at_the_lowest_float_counts_eligible_entries_only():
    """Infinite scores are refused (selection never runs on them); the lowest finite one is an edge."""
    s = {"a": torch.tensor([LOWEST, 1.0, LOWEST, 2.0, LOWEST]),
         "b": torch.full((4,), LOWEST)}
    keep = {"a": torch.tensor([True, False, False, False, False]),
            "b": torch.tensor([False, True, False, False])}
    for count in (3, 5, 7, 9):
        expected = reference_select_topk(s, count=count, keep=keep)
        got = select_topk(s, count=count, keep=keep)
        assert all(torch.equal(got[n], expected[n]) for n in s), count


@pytest.mark.parametrize("seed", range(4))
def test_kth_largest_by_radix_equals_sorting(seed):
    from fishertune.sparse.selection import _kth_largest

    g = torch.Generator().manual_seed(seed)
    # signs, magnitudes from 1e-40 (subnormal) to 1e30, exact ties, ±0 and ±inf: every bucket kind
    values = [torch.randn(n, generator=g) * 10.0 ** torch.randint(-40, 30, (n,), generator=g)
              for n in (0, 1, 50, 300)]
    values[3][:40] = torch.tensor([0.0, -0.0, math.inf, -math.inf, 1.0, 1.0, -1.0, -1.0] * 5)
    eligible = [torch.rand(v.shape, generator=g) < 0.8 for v in values]
    pool = torch.cat([v[e] for v, e in zip(values, eligible)]).sort(descending=True).values
    for k in range(1, pool.numel() + 1):
        assert _kth_largest(values, eligible, k).item() == pool[k - 1].item(), k
