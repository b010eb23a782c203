"""The layerwise per-sample Fisher (one batched pass) against one-sample-at-a-time autograd."""

import pytest
import torch
from tiny_models import brute_force_fisher, classification_loss, make_batches
from torch import nn

from fishertune import empirical_fisher
from fishertune.errors import UsageError
from fishertune.models.backbones import tiny_backbone_config
from fishertune.models.segmentor import build_segmentor
from fishertune.sparse.fisher import fisher_sums
from fishertune.sparse.perturbation import FeaturePerturbation


def layer_params(vit: nn.Module) -> list[str]:
    """The tiny ViT's linear and LayerNorm parameters (not its convolution, cls token or positions)."""
    return [n for n, _ in vit.named_parameters() if n.split(".")[0] in ("blocks", "norm", "head")]


def assert_close_to(result: dict, reference: dict) -> None:
    for name in reference:
        torch.testing.assert_close(result[name], reference[name], rtol=1e-4, atol=1e-9, msg=name)


def test_layerwise_equals_one_sample_loop_on_mlp_and_vit(mlp, vit):
    batches = make_batches([3, 1, 4], (6,))
    names = [n for n, _ in mlp.named_parameters()]  # `unused` gets no gradient: zeros
    assert_close_to(empirical_fisher(mlp, batches, classification_loss, backend="layerwise"),
                    brute_force_fisher(mlp, batches, classification_loss, names))
    batches = make_batches([2, 3], (3, 8, 8))
    names = layer_params(vit)
    assert_close_to(empirical_fisher(vit, batches, classification_loss, names, backend="layerwise"),
                    brute_force_fisher(vit, batches, classification_loss, names))
    assert all(p.requires_grad for p in vit.parameters())  # unfrozen again afterwards


@pytest.mark.parametrize("weigh_samples,chunk_size", [(False, None), (True, None), (True, 2)])
def test_layerwise_under_perturbation_equals_the_loop_draw_for_draw(vit, weigh_samples, chunk_size):
    batches = make_batches([3, 2], (3, 8, 8))
    results = {}
    for backend in ("layerwise", "loop"):
        pert = FeaturePerturbation(vit, ["blocks.0", "blocks.1"], alpha=1.0, seed=5,
                                   weigh_samples=weigh_samples)
        with pert:
            with torch.no_grad(), pert.recording():
                for b in batches:
                    classification_loss(vit, b)
            results[backend] = empirical_fisher(vit, batches, classification_loss, layer_params(vit),
                                                backend=backend, perturbation=pert, chunk_size=chunk_size)
            results[backend, "draws"] = pert.take_draws(), pert.sample_weight_log
    assert_close_to(results["layerwise"], results["loop"])
    assert results["layerwise", "draws"] == results["loop", "draws"]
    clean = empirical_fisher(vit, batches, classification_loss, layer_params(vit), backend="loop")
    assert not torch.allclose(clean["blocks.1.fc1.weight"], results["layerwise"]["blocks.1.fc1.weight"])


@pytest.mark.parametrize("backbone,head", [("dinov2", "linear"), ("clip", "linear"),
                                           ("dinov2", "mask2former")])
def test_layerwise_on_the_library_backbones_and_heads(backbone, head):
    """Layer scale (DINOv2), another family (CLIP), and a loss vmap cannot take (Mask2Former's matching)."""
    torch.manual_seed(0)
    model = build_segmentor({"name": backbone, "config": tiny_backbone_config(backbone)}, head,
                            num_classes=5).eval()
    names = [n for n, _ in model.named_parameters() if n.startswith("backbone") and "embeddings" not in n]
    assert backbone != "dinov2" or any("layer_scale" in n for n in names)
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randn(3, 3, 32, 32, generator=g),
             "label": torch.randint(0, 5, (3, 32, 32), generator=g)}

    def loss(m, b):
        return m.loss(b["image"], b["label"], reduction="none")

    fast = empirical_fisher(model, [batch], loss, names, backend="layerwise")
    slow = empirical_fisher(model, [batch], loss, names, backend="loop")
    # the key bias's true Fisher is 0 (softmax shift); Mask2Former's losses (~100 per image) round at 1e-4
    scale = max(s.abs().max() for s in slow.values())
    for name in names:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-3, atol=1e-5 * scale, msg=name)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.fc(torch.tanh(self.fc(x))))


def test_auto_falls_back_where_layerwise_cannot_serve(vit):
    batches = make_batches([3, 2], (3, 8, 8))
    every = [n for n, _ in vit.named_parameters()]  # a convolution and tokens: vmap
    assert_close_to(empirical_fisher(vit, batches, classification_loss),
                    brute_force_fisher(vit, batches, classification_loss, every))
    with pytest.raises(UsageError, match="layerwise.*cls_token"):
        empirical_fisher(vit, batches, classification_loss, backend="layerwise")
    twice = Twice()  # a layer run twice: its samples' gradients are not one product per sample
    batches = make_batches([4], (6,))
    names = [n for n, _ in twice.named_parameters()]
    assert_close_to(empirical_fisher(twice, batches, classification_loss),
                    brute_force_fisher(twice, batches, classification_loss, names))
    with pytest.raises(UsageError, match="runs twice"):
        fisher_sums(twice, batches, classification_loss, backend="layerwise")
