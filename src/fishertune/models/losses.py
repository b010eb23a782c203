"""Segmentation losses: pixel cross-entropy (per image for the Fisher) and the mask-classification loss.

Both return one value per image with reduction="none"; "mean" is the mean of those per-image values, so a
mini-batch loss is exactly the average of the per-sample losses the Fisher squares the gradients of.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from fishertune.errors import UsageError
from fishertune.label_space import IGNORE_INDEX


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    raise UsageError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """ℓ_n = mean over image n's valid pixels of CE(softmax(logits), label); label 255 is ignored.

    Logits [B, C, h, w] are upsampled bilinearly to the label size [B, H, W] first. An image without a
    valid pixel gives 0 (and no gradient).
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    pixel = F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX, reduction="none")
    valid = (labels != IGNORE_INDEX).flatten(1).sum(1)
    per_image = pixel.flatten(1).sum(1) / valid.clamp(min=1)
    return _reduce(per_image, reduction)


# -- mask classification (Mask2Former, Cheng et al. 2022) --------------------------------------------------
def semantic_to_masks(label: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One binary mask per class present in a label map [H, W]: (classes [K], masks [K, H, W] float)."""
    classes = torch.unique(label)
    classes = classes[(classes != IGNORE_INDEX) & (classes < num_classes)]
    return classes, (label[None] == classes.view(-1, *[1] * label.dim())).float()


def pairwise_mask_costs(mask_logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sigmoid-BCE and dice cost of every prediction [Q, P] against every target mask [K, P] -> two [Q, K].

    BCE_qk = mean_p [t_kp·softplus(-x_qp) + (1 - t_kp)·softplus(x_qp)];
    dice_qk = 1 - (2 Σ_p σ(x_qp) t_kp + 1) / (Σ_p σ(x_qp) + Σ_p t_kp + 1).
    """
    num_points = mask_logits.shape[1]
    bce = (F.softplus(-mask_logits) @ targets.T + F.softplus(mask_logits) @ (1 - targets).T) / num_points
    prob = mask_logits.sigmoid()
    dice = 1 - (2 * prob @ targets.T + 1) / (prob.sum(1)[:, None] + targets.sum(1)[None, :] + 1)
    return bce, dice


def paired_mask_losses(mask_logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same BCE and dice as `pairwise_mask_costs`, for row-aligned pairs [K, P], [K, P] -> two [K]."""
    bce = F.binary_cross_entropy_with_logits(mask_logits, targets, reduction="none").mean(1)
    prob = mask_logits.sigmoid()
    dice = 1 - (2 * (prob * targets).sum(1) + 1) / (prob.sum(1) + targets.sum(1) + 1)
    return bce, dice


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of targets (columns) to queries (rows), scipy's Hungarian solver."""
    rows, cols = linear_sum_assignment(cost.detach().float().cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


class MaskClassificationLoss:
    """Mask2Former's set loss per image, on masks at the prediction's resolution.

    Queries are matched to the image's class masks by the Hungarian algorithm on
    cost = w_class·(-p_q(c_k)) + w_mask·BCE_qk + w_dice·dice_qk. Then
    ℓ = w_class·CE(all queries; unmatched -> "no object", weighted `no_object_weight`)
        + w_mask·mean_matched BCE + w_dice·mean_matched dice.
    Labels are downsampled (nearest) to the mask-logit resolution instead of Mask2Former's point sampling:
    deterministic and cheap. Pixels labelled 255 take no part in the mask terms; an image without a valid
    pixel gives 0. Defaults are Mask2Former's (2, 5, 5, 0.1).
    """

    def __init__(self, num_classes: int, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object_weight: float = 0.1):
        self.num_classes = num_classes
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.no_object_weight = no_object_weight

    def __call__(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                 reduction: str = "mean") -> torch.Tensor:
        """class_logits [B, Q, C+1], mask_logits [B, Q, h, w], labels [B, H, W] -> loss ([B] for "none")."""
        size = mask_logits.shape[-2:]
        small = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
        per_image = [self.image_loss(c.float(), m.float(), lab)
                     for c, m, lab in zip(class_logits, mask_logits, small)]
        return _reduce(torch.stack(per_image), reduction)

    def match(self, class_logits, mask_logits, classes, masks) -> tuple[torch.Tensor, torch.Tensor]:
        """Hungarian matching of one image: queries [Q, C+1], [Q, P] against targets [K], [K, P]."""
        with torch.no_grad():
            bce, dice = pairwise_mask_costs(mask_logits, masks)
            class_cost = -class_logits.softmax(-1)[:, classes]
            cost = self.class_weight * class_cost + self.mask_weight * bce + self.dice_weight * dice
        return hungarian_match(cost)

    def image_loss(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, label: torch.Tensor):
        valid = (label != IGNORE_INDEX).flatten()
        if not valid.any():
            return (class_logits.sum() + mask_logits.sum()) * 0.0
        classes, masks = semantic_to_masks(label, self.num_classes)
        points = mask_logits.flatten(1)[:, valid]
        targets = masks.flatten(1)[:, valid]
        rows, cols = self.match(class_logits, points, classes, targets)
        target_class = torch.full((class_logits.shape[0],), self.num_classes, dtype=torch.long,
                                  device=class_logits.device)
        target_class[rows.to(target_class.device)] = classes[cols.to(classes.device)]
        weight = torch.ones(self.num_classes + 1, device=class_logits.device)
        weight[-1] = self.no_object_weight
        class_loss = F.cross_entropy(class_logits, target_class, weight=weight)
        bce, dice = paired_mask_losses(points[rows], targets[cols])
        return self.class_weight * class_loss + self.mask_weight * bce.mean() + self.dice_weight * dice.mean()
