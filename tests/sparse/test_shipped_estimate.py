"""The pieces of the shipped estimate (docs/method.md §3-§4, §8) against independent references: antithetic
weight samples, the empirical-Bayes prior floor, per-tensor normalisation, the per-sample draw weight,
which term decides a selection, Spearman with ties, and the schedule given as fractions of the run."""

import math

import pytest
import torch
from scipy import stats
from shipped_defaults import shipped_selector_config
from tiny_models import MLP, classification_loss, make_batches
from torch import nn

from fishertune import MaskSelector, MaskSelectorConfig, empirical_fisher, variational_fisher
from fishertune.sparse.dr_fim import normalize_term
from fishertune.sparse.fisher import fisher_sums
from fishertune.sparse.mask_selector import estimate_count
from fishertune.sparse.perturbation import FeaturePerturbation
from fishertune.sparse.reliability import spearman, term_influence
from fishertune.sparse.variational import VariationalCurvature, VariationalSettings


class Quadratic(nn.Module):
    """ℓ_n = ½ Σ_i a_i (θ_i − c_{n,i})²: the gradient a ⊙ (θ − c_n) is linear in θ, so at θ = m ± σξ it is
    exactly g_n ± a ⊙ σξ."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(6))
        self.register_buffer("a", torch.linspace(0.5, 3.0, 6))

    def forward(self, c):
        return 0.5 * (self.a * (self.theta - c).square()).sum(1)


def quadratic_loss(model, batch):
    return model(batch["c"])


def quadratic_batches():
    g = torch.Generator().manual_seed(0)
    return [{"c": torch.randn(4, 6, generator=g)} for _ in range(3)]


@pytest.mark.parametrize("samples, never_below", [(1, False), (2, True), (4, True)])
def test_antithetic_pairs_cancel_the_first_order_weight_noise(samples, never_below):
    """A pair's mean square is g² + (a σξ)² ≥ g² entrywise; one unpaired draw adds 2σ g·aξ, which is
    negative somewhere."""
    model = Quadratic()
    batches = quadratic_batches()
    plain = empirical_fisher(model, batches, quadratic_loss)["theta"]
    settings = VariationalSettings("vogn", gamma=1.0, tau=0.3, samples=samples, seed=1)
    noisy = variational_fisher(model, batches, quadratic_loss, settings=settings)["theta"]
    excess = noisy - plain
    if never_below:
        assert bool((excess >= -1e-6).all()) and bool((excess > 1e-4).any())
    else:
        assert bool((excess < -1e-3).any())
    assert torch.equal(model.theta.detach(), torch.zeros(6))  # the weights are restored


def test_the_empirical_bayes_floor_follows_the_mean_curvature():
    model = MLP()
    batches = make_batches([4, 4], (6,))
    names = ["fc1.weight", "fc2.weight"]
    settings = VariationalSettings("vogn", gamma=1e-4, tau=1e-2, samples=2, seed=0, floor=2.0)
    posterior = VariationalCurvature(model, classification_loss, names, settings)
    for batch in batches:
        posterior.update(batch)
        assert posterior.prior_floor == pytest.approx(2.0 * float(posterior.flat.mean()), rel=1e-6)
        assert posterior.ratio_scale == pytest.approx(posterior.prior_floor * 1e-4, rel=1e-6)  # γ = δτ²
    with pytest.raises(Exception, match="floor"):
        VariationalSettings("vogn", floor=0.0)


def test_per_tensor_normalisation_divides_each_tensor_by_its_own_mean():
    values = torch.tensor([1.0, 3.0, 10.0, 20.0, 30.0, 0.0, 0.0])
    out = normalize_term(values, "per_tensor", [2, 3, 2])
    torch.testing.assert_close(out, torch.tensor([0.5, 1.5, 0.5, 1.0, 1.5, 0.0, 0.0]))
    with pytest.raises(Exception, match="lengths"):
        normalize_term(values, "per_tensor")


class Features(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Identity()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.features(x).mean(1))


def token_batches():
    g = torch.Generator().manual_seed(3)
    return [{"x": torch.randn(5, 6, 4, generator=g) * 2 + 1, "y": torch.randint(0, 3, (5,), generator=g)}]


@pytest.mark.parametrize("backend", ["vmap", "loop"])
def test_the_sample_reading_weighs_each_sample_by_its_own_scalar_draw(backend):
    """Σ_n w_n g_n² with w_n = exp(−α(ε_μ,n + ε_σ,n)), recomputed one sample at a time with the same draws."""
    torch.manual_seed(0)
    model = Features().eval()
    batch = token_batches()[0]
    alpha = 0.7
    with FeaturePerturbation(model, "features", alpha, seed=5, weigh_samples=True) as perturbation:
        with perturbation.recording(), torch.no_grad():
            model(batch["x"])
        sums, count = fisher_sums(model, [batch], classification_loss, ["head.weight"], backend=backend,
                                  perturbation=perturbation)
    logged = perturbation.sample_weight_log
    assert len(logged) == 5 and len(set(logged)) == 5
    with FeaturePerturbation(model, "features", alpha, seed=5, weigh_samples=True) as reference:
        with reference.recording(), torch.no_grad():
            model(batch["x"])
        draws = reference.presample(5)
        expected = torch.zeros_like(model.head.weight)
        for n in range(5):
            mu, sigma = draws["features"][0][n], draws["features"][1][n]
            assert mu.numel() == 1 and sigma.numel() == 1  # one scalar per sample and module
            w = math.exp(-alpha * float(mu + sigma))
            assert w == pytest.approx(logged[n], rel=1e-5)
            one = {"features": (draws["features"][0][n:n + 1], draws["features"][1][n:n + 1])}
            with reference.using(one):
                loss = classification_loss(model, {"x": batch["x"][n:n + 1], "y": batch["y"][n:n + 1]})[0]
            (g,) = torch.autograd.grad(loss, [model.head.weight])
            expected += w * g.square()
    assert count == 5
    torch.testing.assert_close(sums["head.weight"], expected, rtol=1e-5, atol=1e-8)


def test_term_influence_counts_the_top_k_shared_with_each_term():
    task = torch.tensor([9.0, 8.0, 7.0, 0.0, 0.0, 0.0])
    domain = torch.tensor([0.0, 0.0, 5.0, 6.0, 4.0, 0.0])
    # DR = [9, 8, 12, 6, 4, 0]: top 3 = {2, 0, 1}; task's top 3 = {0, 1, 2}; domain's = {3, 2, 4}
    influence = term_influence(task, domain, 3)
    assert influence["task"]["share"] == 1.0
    assert influence["domain"]["share"] == pytest.approx(1 / 3)
    dr = (task + domain).numpy()
    assert influence["domain"]["spearman"] == pytest.approx(stats.spearmanr(dr, domain.numpy()).statistic)


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (200,), generator=g).float()
    b = a + torch.randint(0, 3, (200,), generator=g).float()
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12)


def test_the_schedule_given_as_fractions_scales_with_the_run():
    """update_fraction 0.25 of 100 steps: mask updates after steps 25, 50 and 75 (none after the last);
    growth_fraction 0.5: T = 50 steps; growth_start 0.4: δ(0) = 40% of the budget."""
    torch.manual_seed(0)
    model = MLP()
    batches = make_batches([4], (6,))
    config = MaskSelectorConfig(ratio=0.5, score="fim", growth_start=0.4, growth_fraction=0.5,
                                update_fraction=0.25, include=["fc1.weight", "fc2.weight"])
    selector = MaskSelector(model, config)
    assert estimate_count(config, 100) == 4
    selector.total_steps = None
    selector.estimate(batches, classification_loss)
    selector.select(0)
    optimizer = selector.build_optimizer(model.named_parameters(), lr=1e-3)
    for step in range(100):
        selector.after_step(step, 100, batches, classification_loss, optimizer)
    assert [h["step"] for h in selector.history] == [0, 25, 50, 75]
    for h in selector.history:
        assert h["ratio"] == pytest.approx(0.5 - (0.5 - 0.2) * math.exp(-h["step"] / 50))
    with pytest.raises(Exception, match="not both"):
        MaskSelectorConfig(update_every=10, update_fraction=0.1)


def test_an_exact_reestimate_frees_the_spent_gradients_and_only_then():
    """The step's gradients are spent once the optimiser has stepped: an exact re-estimate drops them so
    that its buffers replace them at the peak; a step without a mask update keeps them."""
    torch.manual_seed(0)
    model = MLP()
    batches = make_batches([4], (6,))
    config = MaskSelectorConfig(ratio=0.5, score="fim", growth_start=0.4, update_every=2,
                                include=["fc1.weight", "fc2.weight"])
    selector = MaskSelector(model, config)
    selector.estimate(batches, classification_loss)
    selector.select(0)
    optimizer = selector.build_optimizer(model.named_parameters(), lr=1e-3)
    for step, freed in ((0, False), (1, True)):
        optimizer.zero_grad()
        classification_loss(model, batches[0]).mean().backward()
        optimizer.step()
        selector.after_step(step, 10, batches, classification_loss, optimizer)
        assert (model.fc1.weight.grad is None) == freed, step
    assert [h["step"] for h in selector.history] == [0, 2]


def test_an_estimate_shows_its_progress_when_asked(capsys):
    model = Features()
    selector = MaskSelector(model, MaskSelectorConfig(ratio=0.5, perturb_layers=["features"]))
    selector.estimate(token_batches(), classification_loss)
    assert "estimate 1" not in capsys.readouterr().err  # off by default (the library is quiet)
    selector.show_progress = True
    selector.estimate(token_batches(), classification_loss)
    assert "estimate 2 (dr_fim)" in capsys.readouterr().err


@pytest.mark.parametrize("score", ["dr_fim", "delta_f"])
def test_scores_made_in_the_domain_terms_buffer_equal_the_kept_terms_sum(score):
    """Without keep_terms the scores are made in place (no copy of the task term): the same bits."""
    scores = []
    for keep in (True, False):
        config = shipped_selector_config(ratio=0.5, score=score, perturb_layers=["features"])
        torch.manual_seed(0)
        selector = MaskSelector(Features(), config, keep_terms=keep)
        scores.append(selector.estimate(token_batches(), classification_loss))
        assert bool(selector.terms) == keep
    for name in scores[0]:
        assert torch.equal(scores[0][name], scores[1][name]), name
