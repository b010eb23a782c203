import itertools
import math

import pytest
import torch

from fishertune import FisherTuneError, select_topk
from fishertune.errors import InputError, UsageError


def scores(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.rand(6, 5, generator=g), "a.bias": torch.rand(6, generator=g),
            "b.weight": torch.rand(4, 7, generator=g), "emb.token": torch.rand(1, 1, 3, generator=g)}


def brute_force_global(s, k):
    """Reference: sort (score desc, tensor order, flat index) with Python's stable sort."""
    entries = [(-float(v), i, j) for i, (n, t) in enumerate(s.items()) for j, v in enumerate(t.reshape(-1))]
    chosen = sorted(entries)[:k]
    names = list(s)
    masks = {n: torch.zeros(t.numel(), dtype=torch.bool) for n, t in s.items()}
    for _, i, j in chosen:
        masks[names[i]][j] = True
    return {n: m.view(s[n].shape) for n, m in masks.items()}


def total(masks):
    return sum(int(m.sum()) for m in masks.values())


@pytest.mark.parametrize("k", [0, 1, 7, 30, 67])
def test_global_element_topk_matches_brute_force(k):
    s = scores()
    masks = select_topk(s, count=k)
    expected = brute_force_global(s, k)
    assert all(torch.equal(masks[n], expected[n]) for n in s)
    assert all(m.shape == s[n].shape and m.dtype == torch.bool for n, m in masks.items())


@pytest.mark.parametrize("granularity,scope,amount", list(itertools.product(
    ["element", "row", "tensor"], ["global", "per_tensor"],
    [dict(ratio=0.3), dict(count=20), dict(ratio=1.0)])))
def test_counts_are_exact_at_every_granularity_and_scope(granularity, scope, amount):
    s = scores()
    n_total = sum(t.numel() for t in s.values())
    masks = select_topk(s, granularity=granularity, scope=scope, **amount)
    if scope == "global":
        expected = amount.get("count", math.floor(amount.get("ratio", 0) * n_total + 0.5))
        assert total(masks) == expected
    else:
        r = amount.get("ratio", amount.get("count", 0) / n_total)
        for n, t in s.items():
            assert int(masks[n].sum()) == math.floor(r * t.numel() + 0.5), n


def test_row_granularity_takes_whole_best_rows_then_one_partial():
    s = {"w": torch.tensor([[1.0, 1.0, 1.0], [5.0, 0.0, 4.0], [3.0, 3.0, 3.0]])}  # row means 1, 3, 3
    masks = select_topk(s, count=5, granularity="row")
    # rows 1 and 2 tie at mean 3: row 1 first (index order), whole; then 2 entries of row 2 (first two, tie)
    assert masks["w"].tolist() == [[False] * 3, [True] * 3, [True, True, False]]


def test_tensor_granularity_ranks_by_mean():
    s = {"low": torch.full((4,), 1.0), "high": torch.tensor([9.0, 0.0, 0.0]), "mid": torch.full((2,), 2.5)}
    masks = select_topk(s, count=5, granularity="tensor")  # means 1, 3, 2.5
    assert masks["high"].all() and masks["mid"].all() and masks["low"].tolist() == [False] * 4


def test_ties_break_by_tensor_order_then_index():
    s = {"x": torch.ones(4), "y": torch.ones(3)}
    masks = select_topk(s, count=5)
    assert masks["x"].all() and masks["y"].tolist() == [True, False, False]
    again = select_topk(s, count=5)
    assert all(torch.equal(masks[n], again[n]) for n in s)


def test_include_exclude_and_cap():
    s = scores()
    masks = select_topk(s, ratio=0.5, exclude=["emb.*"])
    assert not masks["emb.token"].any()
    candidates = sum(t.numel() for n, t in s.items() if n != "emb.token")
    assert total(masks) == math.floor(0.5 * candidates + 0.5)
    only_a = select_topk(s, count=10, include="a.*")
    assert not only_a["b.weight"].any() and total(only_a) == 10
    s["b.weight"] = s["b.weight"] + 10  # b would take everything without a cap
    capped = select_topk(s, count=20, max_per_tensor=0.5)
    assert int(capped["b.weight"].sum()) == 14 and total(capped) == 20
    # within the cap, b keeps its best entries
    kept = s["b.weight"][capped["b.weight"]]
    assert kept.min() >= s["b.weight"][~capped["b.weight"]].max()
    for granularity in ("row", "tensor"):
        capped = select_topk(s, count=20, max_per_tensor=0.5, granularity=granularity)
        assert total(capped) == 20 and all(int(capped[n].sum()) <= 0.5 * t.numel() for n, t in s.items())
        assert int(capped["b.weight"].sum()) == 14


def test_bad_requests_are_errors():
    # UsageError: arguments the API does not accept (a programming error); InputError: values a user's config
    # reaches select_topk with (patterns that match nothing, a budget the caps cannot hold)
    s = scores()
    all_a = {"a.weight": torch.ones_like(s["a.weight"], dtype=torch.bool)}
    for kwargs, error, message in [
            (dict(), UsageError, "exactly one"), (dict(ratio=0.1, count=3), UsageError, "exactly one"),
            (dict(ratio=1.5), UsageError, "ratio must be in"), (dict(count=-1), UsageError, "count must be"),
            (dict(count=10_000), UsageError, "count must be"),
            (dict(ratio=0.1, granularity="col"), UsageError, "unknown granularity 'col'"),
            (dict(ratio=0.1, scope="local"), UsageError, "unknown scope"),
            (dict(ratio=0.1, max_per_tensor=1.5), UsageError, "max_per_tensor must be in"),
            (dict(ratio=0.1, keep={"a.weight": torch.ones(2, dtype=torch.bool)}), UsageError, "keep mask of"),
            (dict(ratio=0.1, exclude="a*", keep=all_a), UsageError, "not a candidate"),
            (dict(count=1, keep=all_a), UsageError, "below the"),
            (dict(count=40, max_per_tensor=0.5, keep=all_a), UsageError, "already selected entries exceed"),
            (dict(ratio=0.1, include="zzz*"), InputError, "matches no parameter"),
            (dict(ratio=0.1, exclude="*"), InputError, "no candidate"),
            (dict(ratio=0.9, max_per_tensor=0.5), InputError, "exceeds max_per_tensor")]:
        with pytest.raises(error, match=message) as raised:
            select_topk(s, **kwargs)
        assert type(raised.value) is error
    with pytest.raises(FisherTuneError, match="NaN"):
        select_topk({"w": torch.tensor([1.0, float("nan")])}, count=1)
