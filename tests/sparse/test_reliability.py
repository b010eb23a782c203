"""Split-half reliability of DR-FIM's terms."""

import pytest
import torch
from tiny_models import classification_loss, make_batches

from fishertune import MaskSelectorConfig
from fishertune.sparse.reliability import halves, spearman, split_half_reliability


def test_halves_split_every_batch():
    (batch,) = make_batches([5], (3, 8, 8))
    first, second = halves(batch)
    assert torch.equal(torch.cat([first["x"], second["x"]]), batch["x"])
    assert first["y"].shape == (2,) and second["y"].shape == (3,) and first["name"] == batch["name"]


def test_spearman_matches_the_rank_formula():
    a = torch.tensor([0.3, 0.1, 0.9, 0.5])
    b = torch.tensor([1.0, 2.0, 4.0, 3.0])
    ranks_a, ranks_b = torch.tensor([2.0, 1, 4, 3]), torch.tensor([1.0, 2, 4, 3])
    d2 = (ranks_a - ranks_b).square().sum().item()
    assert spearman(a, b) == pytest.approx(1 - 6 * d2 / (4 * (16 - 1)))


def test_identical_halves_agree_on_the_task_term_but_draw_independently(vit):
    """Each batch holds its images twice, so both halves hold the same images: the (deterministic) clean
    Fisher agrees exactly, while the perturbed one sees independent draws in each half."""
    batches = [{k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in b.items()}
               for b in make_batches([3, 3], (3, 8, 8))]
    config = MaskSelectorConfig(count=50, include=["blocks.*"], perturb_layers=["blocks.0"], seed=4)
    result = split_half_reliability(vit, config, batches, classification_loss)
    assert result["task"] == 1.0 and result["images_per_half"] == 6
    assert result["domain"] < 0.999
