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


def test_evaluate_reports_the_synthia_class_subsets():
    """Prediction = label except on wall (3) and terrain (9), which are predicted as road (0): IoU 0 for both.
    mIoU16 drops terrain only, mIoU13 drops wall and terrain too (independent count below)."""
    from torch import nn

    from fishertune.engine.evaluator import EvalSettings, evaluate

    label = torch.arange(19).repeat_interleave(4).reshape(1, 4, 19)  # every class, 4 px each

    class Fixed(nn.Module):
        def predict(self, images, **kwargs):
            prediction = label.clone()
            prediction[(label == 3) | (label == 9)] = 0
            return nn.functional.one_hot(prediction, 19).permute(0, 3, 1, 2).float()

    dataset = [{"image": torch.zeros(3, 4, 19), "label": label[0]}]
    result = evaluate(Fixed(), dataset, EvalSettings(), torch.device("cpu"))
    road = 4 / (4 + 8)  # road: 4 true px, 8 false positives from wall and terrain
    assert result["miou"] == pytest.approx(100 * (16 + road) / 19)
    # 16: without terrain, truck, train; 13: also without wall, fence, pole
    assert result["miou_subsets"]["16"] == pytest.approx(100 * (14 + road) / 16)
    assert result["miou_subsets"]["13"] == pytest.approx(100 * (12 + road) / 13)
