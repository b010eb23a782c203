"""Confusion-matrix segmentation metrics (torchvision references style): IoU per class and mIoU.

IoU_c = TP_c / (TP_c + FP_c + FN_c), counted over all pixels whose label is not IGNORE_INDEX (255). mIoU
averages the classes that occur in the labels or the predictions (classes absent from both have no IoU and
are skipped, as in mmseg). Counts are int64, so all-reducing them across ranks is exact.
"""

from __future__ import annotations

import torch

from fishertune.engine import distributed
from fishertune.label_space import IGNORE_INDEX, NUM_CLASSES


class ConfusionMatrix:
    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, label: torch.Tensor) -> None:
        """Add [.., H, W] predicted and true class ids; rows are true classes, columns predictions."""
        label = label.reshape(-1).to(torch.int64).cpu()
        prediction = prediction.reshape(-1).to(torch.int64).cpu()
        valid = label != self.ignore_index
        n = self.num_classes
        index = label[valid] * n + prediction[valid]
        self.matrix += torch.bincount(index, minlength=n * n).reshape(n, n)

    def all_reduce(self) -> None:
        """Sum the counts over all processes of a distributed run (no-op otherwise)."""
        self.matrix = distributed.all_reduce_sum(self.matrix)

    def iou(self) -> torch.Tensor:
        """[num_classes] float64 IoU in [0, 1]; NaN for a class absent from labels and predictions."""
        m = self.matrix.double()
        true_positive = m.diag()
        union = m.sum(0) + m.sum(1) - true_positive
        nan = torch.full_like(union, float("nan"))
        return torch.where(union > 0, true_positive / union.clamp(min=1), nan)

    def miou(self) -> float:
        """Mean IoU in percent over the classes that occur."""
        iou = self.iou()
        present = ~iou.isnan()
        return float(100 * iou[present].mean()) if present.any() else float("nan")

    def pixel_accuracy(self) -> float:
        return float(100 * self.matrix.diag().sum() / self.matrix.sum().clamp(min=1))


def per_image_counts(prediction: torch.Tensor, label: torch.Tensor, num_classes: int = NUM_CLASSES,
                     ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of [B, H, W] predicted and true class ids: (intersection, union), each int64 [B, C].

    intersection_c = TP_c and union_c = TP_c + FP_c + FN_c over the image's valid pixels. Both add up
    over images, so any set of images (e.g. a bootstrap resample, with repeats) has the pooled IoU
    Σ intersection / Σ union of the confusion matrix of those images."""
    batch = label.shape[0]
    label = label.reshape(batch, -1).to(torch.int64).cpu()
    prediction = prediction.reshape(batch, -1).to(torch.int64).cpu()
    n = num_classes
    intersection = torch.zeros(batch, n, dtype=torch.int64)
    union = torch.zeros(batch, n, dtype=torch.int64)
    for i in range(batch):
        valid = label[i] != ignore_index
        matrix = torch.bincount(label[i][valid] * n + prediction[i][valid], minlength=n * n).reshape(n, n)
        intersection[i] = matrix.diag()
        union[i] = matrix.sum(0) + matrix.sum(1) - matrix.diag()
    return intersection, union
