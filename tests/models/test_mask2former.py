"""Mask-classification loss and head: matching, ignore handling, semantic inference, extra queries."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from fishertune.models import build_head, tiny_head_config
from fishertune.models.losses import MaskClassificationLoss, hungarian_match, semantic_to_masks


def brute_force_min(cost: torch.Tensor) -> float:
    """Minimum total cost over every injective assignment of the K columns to distinct rows."""
    q, k = cost.shape
    return min(sum(float(cost[r, c]) for c, r in enumerate(rows))
               for rows in itertools.permutations(range(q), k))


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_matches_brute_force(seed):
    cost = torch.rand(6, 4, generator=torch.Generator().manual_seed(seed))
    rows, cols = hungarian_match(cost)
    assert len(set(rows.tolist())) == 4 and sorted(cols.tolist()) == [0, 1, 2, 3]
    assert float(cost[rows, cols].sum()) == pytest.approx(brute_force_min(cost), abs=1e-6)


def test_loss_matching_uses_the_documented_cost():
    """The loss's matching minimises 2·(-p_class) + 5·BCE + 5·dice, each term computed pair by pair here."""
    g = torch.Generator().manual_seed(0)
    criterion = MaskClassificationLoss(num_classes=4)
    class_logits, mask_logits = torch.randn(5, 5, generator=g), torch.randn(5, 30, generator=g)
    label = torch.randint(0, 3, (30,), generator=g)
    classes, masks = semantic_to_masks(label, 4)
    cost = torch.zeros(5, len(classes))
    for q in range(5):
        for k in range(len(classes)):
            bce = F.binary_cross_entropy_with_logits(mask_logits[q], masks[k])
            p = mask_logits[q].sigmoid()
            dice = 1 - (2 * (p * masks[k]).sum() + 1) / (p.sum() + masks[k].sum() + 1)
            cost[q, k] = -2 * class_logits[q].softmax(0)[classes[k]] + 5 * bce + 5 * dice
    rows, cols = criterion.match(class_logits, mask_logits, classes, masks)
    assert float(cost[rows, cols].sum()) == pytest.approx(brute_force_min(cost), abs=1e-5)


def test_perfect_prediction_has_near_zero_loss_and_ignore_gets_no_gradient():
    criterion = MaskClassificationLoss(num_classes=3)
    label = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]])
    class_logits = torch.full((1, 4, 4), -20.0)
    mask_logits = torch.full((1, 4, 4, 4), -20.0)
    for q, c in enumerate([0, 1, 2]):
        class_logits[0, q, c] = 20.0
        mask_logits[0, q][label == c] = 20.0
    class_logits[0, 3, 3] = 20.0  # the spare query says "no object"
    assert float(criterion(class_logits, mask_logits, label[None])) < 1e-3

    noisy = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    criterion(class_logits, noisy, label[None]).backward()
    ignored = (label == 255)
    assert noisy.grad[0][:, ignored].abs().max() == 0
    assert noisy.grad[0][:, ~ignored].abs().sum() > 0
    empty = torch.full((1, 4, 4), 255)
    assert float(criterion(class_logits, noisy.detach(), empty)) == 0.0


def test_semantic_scores_combine_query_masks():
    head = build_head("mask2former", 8, 4, num_classes=3, **tiny_head_config("mask2former"))
    g = torch.Generator().manual_seed(2)
    out = {"class_logits": torch.randn(1, 5, 4, generator=g),
           "mask_logits": torch.randn(1, 5, 2, 3, generator=g)}
    expected = torch.zeros(1, 3, 2, 3)
    for q in range(5):
        probs = out["class_logits"][0, q].softmax(0)
        for c in range(3):
            expected[0, c] += probs[c] * out["mask_logits"][0, q].sigmoid()
    torch.testing.assert_close(head.logits(out), expected)


def test_extra_queries_are_appended_and_receive_gradient():
    torch.manual_seed(0)
    options = tiny_head_config("mask2former")
    head = build_head("mask2former", 8, 4, num_classes=19, **options)
    features = [torch.randn(2, 8, 6, 5) for _ in range(4)]
    plain = head(features)
    n = options["num_queries"]
    assert plain["class_logits"].shape == (2, n, 20) and plain["mask_logits"].shape[:2] == (2, n)

    tokens = torch.randn(3, options["hidden_dim"], requires_grad=True)
    head.extra_queries = lambda: tokens * 2
    out = head(features)
    assert out["class_logits"].shape == (2, n + 3, 20) and out["mask_logits"].shape[:2] == (2, n + 3)
    labels = torch.randint(0, 19, (2, 24, 20))
    head.loss(out, labels).backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    head.extra_queries = None
    batched = tokens.detach()[None].expand(2, -1, -1)
    assert head(features, extra_queries=batched)["class_logits"].shape[1] == n + 3
