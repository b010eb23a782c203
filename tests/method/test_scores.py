"""DR-FIM, the variational Fisher and the growth schedule."""

import math

import pytest
import torch
from tiny_models import classification_loss, make_batches

from fishertune import (
    FisherTuneError,
    dr_fim,
    empirical_fisher,
    grow_masks,
    growth_ratio,
    select_topk,
    variational_fisher,
)


def fishers(seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = {"a": torch.rand(4, 3, generator=g) * 1e-4, "b": torch.tensor([0.0, 2e-4, 2e-4, 1e-5])}
    moved = {n: f * (0.5 + torch.rand(f.shape, generator=g)) for n, f in clean.items()}
    return clean, moved


def test_no_perturbation_gives_fisher():
    clean, _ = fishers()
    raw = dr_fim(clean, clean, eps_mu=0.0, eps_sigma=0.0, normalize="none")
    assert all(torch.equal(raw[n], clean[n]) for n in clean)
    flat_f = torch.cat([f.reshape(-1) for f in clean.values()])
    for normalize in ("mean", "rank"):
        scores = dr_fim(clean, clean, eps_mu=0.3, eps_sigma=0.2, normalize=normalize)
        flat_s = torch.cat([s.reshape(-1) for s in scores.values()])
        # a strictly increasing function of F: same order, and equal F <=> equal score
        order = torch.argsort(flat_f, stable=True)
        assert torch.equal(torch.argsort(flat_s, stable=True), order)
        assert torch.equal(flat_f[:, None] == flat_f[None], flat_s[:, None] == flat_s[None])
        for k in (1, 5, 10):
            a, b = select_topk(clean, count=k), select_topk(scores, count=k)
            assert all(torch.equal(a[n], b[n]) for n in clean)


def test_formula_by_hand():
    clean, moved = fishers()
    f = torch.cat([clean[n].reshape(-1) for n in clean])
    fp = torch.cat([moved[n].reshape(-1) for n in clean])
    w = math.exp(-(0.4 + 0.1))
    ratio = (f - fp).abs() / (torch.minimum(f, fp) + 1e-3 * f.mean())
    expected = {"none": f + w * ratio, "mean": f / f.mean() + w * ratio / ratio.mean()}
    rank = lambda v: torch.tensor([(v < x).sum().item() / v.numel() for x in v])  # noqa: E731
    expected["rank"] = rank(f) + w * rank(ratio)
    for normalize, want in expected.items():
        got = dr_fim(clean, moved, eps_mu=-0.4, eps_sigma=0.1, normalize=normalize)  # |ε| enters w
        torch.testing.assert_close(torch.cat([got[n].reshape(-1) for n in clean]), want)
        assert got["a"].shape == (4, 3)


def test_mean_normalisation_is_scale_free():
    """ε is relative to F, so rescaling both Fishers (units) changes nothing after normalisation."""
    clean, moved = fishers()
    tiny = lambda d: {n: f * 1e-6 for n, f in d.items()}  # noqa: E731
    scaled = dr_fim(tiny(clean), tiny(moved), 0.1, 0.1)
    plain = dr_fim(clean, moved, 0.1, 0.1)
    for n in clean:
        torch.testing.assert_close(scaled[n], plain[n])


def test_dr_fim_errors():
    clean, moved = fishers()
    with pytest.raises(FisherTuneError, match="unknown DR-FIM normalize 'z'"):
        dr_fim(clean, moved, 0, 0, normalize="z")
    with pytest.raises(FisherTuneError, match="different parameters"):
        dr_fim(clean, {"a": moved["a"]}, 0, 0)


def test_variational_zero_noise_is_plain_fisher(mlp):
    batches = make_batches([3, 2, 4], (6,))
    plain = empirical_fisher(mlp, batches, classification_loss)
    running = variational_fisher(mlp, batches, classification_loss, gamma=0.0, beta=None)
    for n in plain:
        torch.testing.assert_close(running[n], plain[n], rtol=1e-5, atol=1e-10)
    one = variational_fisher(mlp, batches[:1], classification_loss, tau=0.0, beta=0.9)
    single = empirical_fisher(mlp, batches[:1], classification_loss)
    for n in plain:
        torch.testing.assert_close(one[n], single[n], rtol=1e-5, atol=1e-10)
    # and it converges as the prior width shrinks
    near = variational_fisher(mlp, batches, classification_loss, tau=1e-6, gamma=1.0, beta=None)
    far = variational_fisher(mlp, batches, classification_loss, tau=0.3, gamma=1.0, beta=None)
    error = lambda v: sum((v[n] - plain[n]).abs().sum() for n in plain)  # noqa: E731
    assert error(near) < 1e-3 * error(far)


def test_variational_restores_weights_and_is_seeded(mlp):
    before = {n: p.detach().clone() for n, p in mlp.named_parameters()}
    batches = make_batches([4, 4], (6,))
    a = variational_fisher(mlp, batches, classification_loss, tau=0.1, gamma=1.0, seed=3)
    b = variational_fisher(mlp, batches, classification_loss, tau=0.1, gamma=1.0, seed=3)
    assert all(torch.equal(p, before[n]) for n, p in mlp.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)
    plain = empirical_fisher(mlp, batches, classification_loss)
    assert not torch.allclose(a["fc1.weight"], plain["fc1.weight"])
    with pytest.raises(FisherTuneError, match="out of range"):
        variational_fisher(mlp, batches, classification_loss, samples=0)


def test_growth_schedule_formula():
    assert growth_ratio(0, 0.01, 0.05, 100) == pytest.approx(0.01)
    assert growth_ratio(100, 0.01, 0.05, 100) == pytest.approx(0.05 - 0.04 * math.exp(-1))
    assert growth_ratio(10**6, 0.01, 0.05, 100) == pytest.approx(0.05)
    assert growth_ratio(3, 0.01, 0.05, 0) == 0.05
    with pytest.raises(FisherTuneError):
        growth_ratio(0, 0.1, 0.05, 10)


@pytest.mark.parametrize("granularity,scope", [("element", "global"), ("row", "global"),
                                               ("element", "per_tensor"), ("tensor", "global")])
def test_masks_grow_monotonically_with_exact_counts(granularity, scope):
    g = torch.Generator().manual_seed(0)
    shapes = {"a": (10, 7), "b": (13,), "c": (6, 4)}
    masks, total = None, sum(math.prod(s) for s in shapes.values())
    for step in range(0, 60, 7):
        scores = {n: torch.rand(s, generator=g) for n, s in shapes.items()}  # re-estimated each time
        ratio = growth_ratio(step, 0.05, 0.6, 20)
        new = grow_masks(masks, scores, ratio, granularity=granularity, scope=scope)
        if masks is not None:
            assert all(not (masks[n] & ~new[n]).any() for n in shapes)
        if scope == "global":
            assert sum(int(m.sum()) for m in new.values()) == math.floor(ratio * total + 0.5)
        else:
            assert all(int(new[n].sum()) == math.floor(ratio * math.prod(s) + 0.5) for n, s in shapes.items())
        masks = new
    with pytest.raises(FisherTuneError, match="below the"):
        grow_masks(masks, scores, 0.01)
