"""Confusion-matrix IoU against a brute-force per-class count."""

import math

import pytest
import torch

from fishertune.engine.metrics import ConfusionMatrix


def brute_force_iou(predictions, labels, num_classes):
    ious = []
    for c in range(num_classes):
        tp = fp = fn = 0
        for p, t in zip(predictions.flatten().tolist(), labels.flatten().tolist()):
            if t == 255:
                continue
            tp += p == c and t == c
            fp += p == c and t != c
            fn += p != c and t == c
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    return ious


def test_iou_matches_brute_force_and_ignores_255():
    generator = torch.Generator().manual_seed(0)
    matrix = ConfusionMatrix(num_classes=5)
    predictions, labels = [], []
    for _ in range(3):
        prediction = torch.randint(0, 4, (2, 7, 9), generator=generator)  # class 4 is never predicted
        label = torch.randint(0, 4, (2, 7, 9), generator=generator)
        label[torch.rand(label.shape, generator=generator) < 0.2] = 255
        matrix.update(prediction, label)
        predictions.append(prediction)
        labels.append(label)
    expected = brute_force_iou(torch.cat(predictions), torch.cat(labels), 5)
    got = matrix.iou().tolist()
    assert math.isnan(got[4]) and math.isnan(expected[4])
    assert got[:4] == pytest.approx(expected[:4], rel=1e-12)
    assert matrix.miou() == pytest.approx(100 * sum(expected[:4]) / 4, rel=1e-12)
    assert int(matrix.matrix.sum()) == sum(int((lab != 255).sum()) for lab in labels)


def test_perfect_prediction_is_100():
    label = torch.tensor([[0, 1, 255], [2, 2, 1]])
    matrix = ConfusionMatrix(num_classes=19)
    matrix.update(label.clamp(max=18), label)
    assert matrix.miou() == 100.0
    assert matrix.pixel_accuracy() == 100.0
