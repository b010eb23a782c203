import dataclasses

import pytest
import torch
from tiny_models import brute_force_fisher, classification_loss, make_batches
from torch import nn

from fishertune import FeaturePerturbation, FisherTuneError, empirical_fisher
from fishertune.sparse.perturbation import Draws


class TupleOut(nn.Module):
    def forward(self, x):
        return x, "extra"


def reference(x, eps_mu, eps_sigma, alpha, dims, spread=None):
    mu = x.mean(dims, keepdim=True)
    sigma = (x.var(dims, keepdim=True) + 1e-6).sqrt()
    if spread is None:
        spread = ((mu.var(0, keepdim=True) + 1e-6).sqrt(), (sigma.var(0, keepdim=True) + 1e-6).sqrt())
    return (x - mu) / sigma * (sigma + alpha * eps_sigma * spread[1]) + mu + alpha * eps_mu * spread[0]


@pytest.mark.parametrize("shape,dims,draw_shape", [((4, 5, 3), (1,), (4, 1, 3)),
                                                   ((4, 3, 2, 5), (2, 3), (4, 3, 1, 1))])
def test_batch_transform_matches_dsu_formula(shape, dims, draw_shape):
    model = nn.Sequential(nn.Identity())
    x = torch.randn(*shape) * 2 + 1
    with FeaturePerturbation(model, ["0"], alpha=0.7, seed=3) as pert:
        out = model(x)
    g = torch.Generator().manual_seed(3)
    eps_mu, eps_sigma = torch.randn(draw_shape, generator=g), torch.randn(draw_shape, generator=g)
    torch.testing.assert_close(out, reference(x, eps_mu, eps_sigma, 0.7, dims))
    draws = pert.take_draws()
    assert (draws.eps_mu, draws.eps_sigma) == pytest.approx((0.7 * eps_mu.mean().item(),
                                                             0.7 * eps_sigma.mean().item()))  # signed
    assert (draws.abs_mu, draws.abs_sigma) == pytest.approx((0.7 * eps_mu.abs().mean().item(),
                                                             0.7 * eps_sigma.abs().mean().item()))
    assert draws.count == eps_mu.numel()
    assert pert.take_draws() == Draws()  # taken: nothing drawn since
    assert model(x) is x  # detached on exit


def test_tuple_outputs_and_identity_when_off():
    model = nn.Sequential(TupleOut())
    x = torch.randn(3, 4, 2)
    with FeaturePerturbation(model, "0", alpha=1.0) as pert:
        out, extra = model(x)
        assert extra == "extra" and not torch.equal(out, x)
        pert.enabled = False
        assert model(x)[0] is x
    with FeaturePerturbation(model, "0", alpha=0.0):
        assert model(x)[0] is x


def test_batch_of_one_uses_recorded_or_own_spread():
    model = nn.Sequential(nn.Identity())
    batches = [torch.randn(3, 4, 2), torch.randn(5, 4, 2)]
    x = torch.randn(1, 4, 2)
    with FeaturePerturbation(model, "0", alpha=0.5, seed=1) as pert:
        own = model(x)
        with pert.recording():
            for b in batches:
                assert model(b) is b  # recording does not perturb
        recorded = model(x)
    g = torch.Generator().manual_seed(1)
    draws = [torch.randn(1, 1, 2, generator=g) for _ in range(4)]
    sigma = (x.var(1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(own, reference(x, draws[0], draws[1], 0.5, (1,), spread=(sigma, sigma)))
    spreads = []
    for b in batches:
        mu, sd = b.mean(1, keepdim=True), (b.var(1, keepdim=True) + 1e-6).sqrt()
        spreads.append(((mu.var(0, keepdim=True) + 1e-6).sqrt(), (sd.var(0, keepdim=True) + 1e-6).sqrt()))
    mean_spread = tuple((spreads[0][i] + spreads[1][i]) / 2 for i in range(2))
    torch.testing.assert_close(recorded, reference(x, draws[2], draws[3], 0.5, (1,), spread=mean_spread))


def test_alpha_zero_leaves_the_model_function_unchanged(vit):
    x = torch.randn(3, 3, 8, 8)
    clean = vit(x)
    with FeaturePerturbation(vit, ["blocks.0", "blocks.1"], alpha=0.0):
        assert torch.equal(vit(x), clean)
    with FeaturePerturbation(vit, "blocks.?", alpha=1.0) as pert:
        assert pert.module_names == ["blocks.0", "blocks.1"]
        assert not torch.allclose(vit(x), clean)


def test_per_sample_fisher_under_perturbation_equals_one_sample_loop(vit):
    batches = make_batches([3, 2], (3, 8, 8))
    names = [n for n, _ in vit.named_parameters()]
    results = []
    for compute in (lambda: empirical_fisher(vit, batches, classification_loss, backend="loop"),
                    lambda: brute_force_fisher(vit, batches, classification_loss, names)):
        pert = FeaturePerturbation(vit, ["blocks.0"], alpha=1.0, seed=5)
        with pert, torch.no_grad(), pert.recording():
            for b in batches:
                classification_loss(vit, b)
        with pert, torch.enable_grad():
            results.append(compute())
            assert pert.take_draws().count == 5 * 16  # one draw per sample: no extra forward passes
    for n in names:
        torch.testing.assert_close(results[0][n], results[1][n], rtol=1e-4, atol=1e-9)
    clean = empirical_fisher(vit, batches, classification_loss, backend="loop")
    assert not torch.allclose(clean["blocks.1.fc1.weight"], results[0]["blocks.1.fc1.weight"])


def test_errors():
    model = nn.Sequential(nn.Identity())
    with pytest.raises(FisherTuneError, match="matches no module"):
        FeaturePerturbation(model, ["blocks.9"])
    with pytest.raises(FisherTuneError, match="alpha"):
        FeaturePerturbation(model, ["0"], alpha=-1)
    with FeaturePerturbation(model, ["0"]), pytest.raises(FisherTuneError, match="expected a"):
        model(torch.randn(3, 4))


def test_vmap_path_under_perturbation_equals_loop_draw_for_draw(vit):
    batches = make_batches([3, 2], (3, 8, 8))
    results = {}
    for backend in ("vmap", "loop"):
        pert = FeaturePerturbation(vit, ["blocks.0", "blocks.1"], alpha=1.0, seed=5)
        with pert:
            with torch.no_grad(), pert.recording():
                for b in batches:
                    classification_loss(vit, b)
            results[backend] = empirical_fisher(vit, batches, classification_loss, backend=backend,
                                                perturbation=pert)
            results[backend + " draws"] = pert.take_draws()
            assert results[backend + " draws"].count == 5 * 2 * 16  # samples x modules x channels
    for n in results["loop"]:
        torch.testing.assert_close(results["vmap"][n], results["loop"][n], rtol=1e-4, atol=1e-9)
    vmap_draws, loop_draws = (dataclasses.astuple(results[k + " draws"]) for k in ("vmap", "loop"))
    assert vmap_draws == pytest.approx(loop_draws)
    with pytest.raises(FisherTuneError, match="forward pass"):
        FeaturePerturbation(vit, ["blocks.0"]).presample(2)
