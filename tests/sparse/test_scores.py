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
from fishertune.sparse.dr_fim import DomainTerm, add_normalized, draw_weight, normalize_term, relative_change
from fishertune.sparse.perturbation import Draws
from fishertune.sparse.variational import VariationalSettings


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
    w = math.exp(-(-0.4 + 0.1))  # the signed draws
    ratio = (f - fp).abs() / (torch.minimum(f, fp) + 1e-3 * f.mean())
    expected = {"none": f + w * ratio, "mean": f / f.mean() + w * ratio / ratio.mean()}
    rank = lambda v: torch.tensor([(v < x).sum().item() / v.numel() for x in v])  # noqa: E731
    expected["rank"] = rank(f) + w * rank(ratio)
    for normalize, want in expected.items():
        got = dr_fim(clean, moved, eps_mu=-0.4, eps_sigma=0.1, normalize=normalize)
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


def test_draw_weight_is_one_at_zero_draw_and_follows_the_signed_draws():
    assert draw_weight(Draws()) == 1.0
    assert draw_weight(Draws(eps_mu=0.3, eps_sigma=-0.1)) == pytest.approx(math.exp(-0.2))
    assert draw_weight(Draws(eps_mu=-0.3, eps_sigma=-0.1)) == pytest.approx(math.exp(0.4))
    magnitudes = Draws(0.3, -0.1, abs_mu=0.8, abs_sigma=0.7)
    assert draw_weight(magnitudes, "abs_mean") == pytest.approx(math.exp(-1.5))
    with pytest.raises(FisherTuneError, match="weighting"):
        draw_weight(Draws(), "signed")


def test_stabilised_ratio_is_the_paper_lambda_form():
    """With Λ = τ⁻² + A/γ, γ·|Λ − Λ'| / (min(Λ, Λ') + ε/γ) equals the ratio floored by δ = γ/τ²."""
    clean, moved = fishers()
    gamma, tau, eps_ratio = 1e-4, 0.5, 1e-3
    a = torch.cat([clean[n].reshape(-1) for n in clean]).double()
    a2 = torch.cat([moved[n].reshape(-1) for n in clean]).double()
    lam, lam2 = tau ** -2 + a / gamma, tau ** -2 + a2 / gamma
    want = gamma * (lam - lam2).abs() / (torch.minimum(lam, lam2) + eps_ratio * a.mean() / gamma)
    ratio = relative_change(a.float(), a2.float(), eps_ratio, prior_floor=gamma / tau ** 2)
    torch.testing.assert_close(gamma * ratio, want.float(), rtol=1e-5, atol=0)
    assert ratio.max() < relative_change(a.float(), a2.float(), eps_ratio).max()  # the prior floors it


def test_domain_term_accumulates_batches_with_their_own_weights():
    clean, moved = fishers()
    a = torch.cat([clean[n].reshape(-1) for n in clean])
    b = torch.cat([moved[n].reshape(-1) for n in clean])
    term = DomainTerm("none")
    term.add(a, b, 0.5)
    term.add(b, a * 2, 2.0)
    expected = (0.5 * relative_change(a, b) + 2.0 * relative_change(b, a * 2)) / 2
    torch.testing.assert_close(term.value(), expected)
    assert term.weights == [0.5, 2.0]


@pytest.mark.parametrize("normalize", ["none", "mean", "per_tensor", "rank"])
def test_domain_term_tensor_by_tensor_equals_the_whole_formula_bit_for_bit(normalize):
    """The lean path (R_b one tensor at a time, the scores made in D's buffer) against the formula on
    whole tensors: T_b(s·R_b)·w_b summed, / B, + T(A)."""
    clean, moved = fishers()
    a = torch.cat([clean[n].reshape(-1) for n in clean])
    b = torch.cat([moved[n].reshape(-1) for n in clean])
    sizes = [clean[n].numel() for n in clean]
    term = DomainTerm(normalize, sizes=sizes)
    term.add(a, b, 0.5, prior_floor=1e-6, scale=3.0)
    term.add(b, a * 2, 2.0, prior_floor=1e-6, scale=3.0)
    expected = sum(w * normalize_term(3.0 * relative_change(x, y, prior_floor=1e-6), normalize, sizes)
                   for x, y, w in ((a, b, 0.5), (b, a * 2, 2.0))) / 2
    assert torch.equal(term.value(), expected)
    task = normalize_term(a, normalize, sizes)
    assert torch.equal(add_normalized(term.take_value(), a, normalize, sizes), expected + task)
    with pytest.raises(FisherTuneError, match="at least one"):
        term.take_value()


def test_vogn_zero_noise_is_plain_fisher(mlp):
    batches = make_batches([3, 2, 4], (6,))
    plain = empirical_fisher(mlp, batches, classification_loss)
    for settings in ({"gamma": 0.0}, {"tau": 0.0}):
        running = variational_fisher(mlp, batches, classification_loss,
                                     settings=VariationalSettings("vogn", **settings))
        for n in plain:
            torch.testing.assert_close(running[n], plain[n], rtol=1e-5, atol=1e-10)
    # and it converges as the posterior noise shrinks
    near, far = (variational_fisher(mlp, batches, classification_loss,
                                    settings=VariationalSettings("vogn", tau=tau, gamma=1.0))
                 for tau in (1e-6, 0.3))
    error = lambda v: sum((v[n] - plain[n]).abs().sum() for n in plain)  # noqa: E731
    assert error(near) < 1e-3 * error(far)


class Quadratic(torch.nn.Module):
    """ℓ_n(θ) = ½ Σ_i a_i θ_i² + b_n·θ: Hessian diag(a) everywhere, gradient b_n + a·θ ≠ 0 at θ."""

    def __init__(self, a):
        super().__init__()
        self.a = a
        self.theta = torch.nn.Parameter(torch.linspace(-1, 1, a.numel()))

    def forward(self, b):
        return 0.5 * (self.a * self.theta.square()).sum() + b @ self.theta


@pytest.mark.slow
def test_ivon_estimates_the_hessian_diagonal():
    """Bonnet: E[ĥ] = E_q[diag ∇²ℓ̄]; on a quadratic each antithetic pair gives exactly a ⊙ ξ²."""
    a = torch.tensor([0.5, 1.0, 2.0, 4.0])
    model = Quadratic(a)
    batches = [{"b": torch.randn(3, 4, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    loss = lambda m, batch: torch.stack([m(b) for b in batch["b"]])  # noqa: E731
    h = variational_fisher(model, batches, loss, settings=VariationalSettings("ivon", gamma=1e-2, tau=1e-2,
                                                                        samples=4000, seed=1))["theta"]
    torch.testing.assert_close(h, a, rtol=0.08, atol=0)  # 8000 ξ² draws per entry: sd ≈ 1.6%


@pytest.mark.slow
def test_ivon_at_small_noise_tends_to_the_hessian_of_a_network(mlp):
    batches = make_batches([6], (6,))
    names = [n for n, _ in mlp.named_parameters()]
    params = dict(mlp.named_parameters())

    def mean_loss(*flat):
        return torch.func.functional_call(mlp, dict(zip(names, flat)), (batches[0]["x"],)).log_softmax(1) \
            .gather(1, batches[0]["y"][:, None]).neg().mean()

    hessian = torch.autograd.functional.hessian(mean_loss, tuple(params[n].detach() for n in names))
    diag = {n: hessian[i][i].reshape(params[n].numel(), -1).diagonal().view_as(params[n])
            for i, n in enumerate(names)}
    h = variational_fisher(mlp, batches, classification_loss,
                           settings=VariationalSettings("ivon", gamma=1e-4, tau=1e-4, samples=3000, seed=2))
    for n in ("fc2.weight", "fc2.bias"):  # Hutchinson noise: compare where the curvature is largest
        torch.testing.assert_close(h[n], diag[n], rtol=0.25, atol=0.1 * diag[n].abs().max().item())


def test_variational_restores_weights_and_is_seeded(mlp):
    before = {n: p.detach().clone() for n, p in mlp.named_parameters()}
    batches = make_batches([4, 4], (6,))
    for curvature in ("ivon", "vogn"):
        settings = VariationalSettings(curvature=curvature, tau=0.1, gamma=1.0, seed=3)
        a = variational_fisher(mlp, batches, classification_loss, settings=settings)
        b = variational_fisher(mlp, batches, classification_loss, settings=settings)
        assert all(torch.equal(p, before[n]) for n, p in mlp.named_parameters())
        assert all(torch.equal(a[n], b[n]) for n in a)
        plain = empirical_fisher(mlp, batches, classification_loss)
        assert not torch.allclose(a["fc1.weight"], plain["fc1.weight"])
    with pytest.raises(FisherTuneError, match="out of range"):
        variational_fisher(mlp, batches, classification_loss, settings=VariationalSettings(samples=0))
    with pytest.raises(FisherTuneError, match="needs posterior noise"):
        variational_fisher(mlp, batches, classification_loss,
                           settings=VariationalSettings(curvature="ivon", gamma=0.0))


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
