"""The memory-lean variational update gives the earlier update's curvature: bit for bit for ivon; for vogn,
whose squares are added into h's own buffer and whose pair's second member is the first reflected about
the mean, up to float rounding."""

import pytest
import torch
from tiny_models import classification_loss, make_batches
from variational_reference import ReferenceCurvature

from fishertune.sparse import FeaturePerturbation, variational
from fishertune.sparse.variational import VariationalCurvature, VariationalSettings


def run(curvature_class, model, batches, settings, names, perturb):
    curvature = curvature_class(model, classification_loss, names, settings)
    if not perturb:
        for batch in batches:
            curvature.update(batch)
        return curvature
    with FeaturePerturbation(model, ["blocks.0"], alpha=1.0, seed=5) as perturbation:
        with perturbation.recording(), torch.no_grad():
            for batch in batches:
                classification_loss(model, batch)
        for batch in batches:
            curvature.update(batch, perturbation)
    return curvature


@pytest.mark.parametrize(("curvature", "samples"), [("ivon", 2), ("vogn", 2), ("vogn", 3), ("vogn", 4)])
@pytest.mark.parametrize("perturb", [False, True])
def test_lean_update_equals_the_reference(vit, curvature, samples, perturb, monkeypatch):
    monkeypatch.setattr(variational, "STEP_CHUNK", 100)  # the ELBO step in several chunks
    settings = VariationalSettings(curvature=curvature, gamma=1e-2, tau=3e-2, samples=samples, seed=7)
    names = [n for n, _ in vit.named_parameters() if n != "head.bias"]  # a parameter left out
    batches = make_batches([4, 3, 4], (3, 8, 8))
    weights = {n: p.detach().clone() for n, p in vit.named_parameters()}
    held = {n: torch.full_like(p, 0.5) for n, p in vit.named_parameters()}  # a training step's gradients
    for n, p in vit.named_parameters():
        p.grad = held[n]
    reference = run(ReferenceCurvature, vit, batches, settings, names, perturb)
    lean = run(VariationalCurvature, vit, batches, settings, names, perturb)
    scale = float(max(h.abs().max() for h in reference.h.values()))
    assert list(lean.value()) == names
    for n in names:
        if curvature == "ivon":
            assert torch.equal(lean.value()[n], reference.h[n]), n
        else:
            torch.testing.assert_close(lean.value()[n], reference.h[n], rtol=1e-4, atol=1e-7 * scale)
        assert lean.value()[n].data_ptr() == lean.flat.data_ptr() + 4 * sum(
            reference.h[m].numel() for m in names[:names.index(n)])  # a view of the flat buffer
    assert lean.flat.abs().sum() > 0
    for n, p in vit.named_parameters():
        assert torch.equal(p, weights[n]), n
        assert p.grad is held[n] and torch.equal(p.grad, torch.full_like(p, 0.5)), n
