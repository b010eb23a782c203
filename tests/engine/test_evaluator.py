"""The evaluator on fabricated predictions, against confusion matrices counted by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from fishertune.data.classes import ClassSet
from fishertune.engine.config import config_from_dict
from fishertune.engine.evaluator import EvalSettings, Inference, evaluate, evaluate_targets
from fishertune.errors import FisherTuneError

CLASSES = ClassSet(("a", "b", "c"), np.zeros((3, 3), np.uint8))
# Two 2x3 images (255: ignored), with what the model predicts for each.
LABELS = [[[0, 0, 1], [1, 2, 255]], [[2, 2, 2], [0, 1, 1]]]
PREDICTIONS = [[[0, 1, 1], [1, 2, 0]], [[2, 2, 0], [0, 1, 2]]]
# Counted by hand, (label -> prediction) over the 11 valid pixels:
#   class a: TP 2 (one per image), FN 1 (a->b, image 0), FP 1 (c->a, image 1)    IoU 2/4
#   class b: TP 3, FN 1 (b->c, image 1), FP 1 (a->b, image 0)                    IoU 3/5
#   class c: TP 3, FN 1 (c->a, image 1), FP 1 (b->c, image 1)                    IoU 3/5
# The ignored pixel, predicted a, counts nowhere.
IOU = {"a": 50.0, "b": 60.0, "c": 60.0}
INTERSECTION = [[1, 2, 1], [1, 1, 2]]  # per image: TP per class
UNION = [[2, 3, 1], [2, 2, 4]]  # per image: TP + FP + FN per class


class Images(torch.utils.data.Dataset):
    """Images whose pixels hold their index, so the fixed model knows which prediction to return."""

    classes, label_table = CLASSES, "fabricated"

    def __init__(self, indices, name="data"):
        self.indices, self.name = list(indices), name

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        index = self.indices[i]
        return {"image": torch.full((3, 2, 3), float(index)), "label": torch.tensor(LABELS[index])}


class Fixed(nn.Module):
    """One-hot scores of PREDICTIONS[image index]; records the inference keywords of every call."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.calls = []

    def predict(self, images, **kwargs):
        self.calls.append(kwargs)
        ids = torch.tensor([PREDICTIONS[int(image[0, 0, 0])] for image in images])
        return nn.functional.one_hot(ids, 3).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("batch_size", [1, 2])
def test_miou_iou_and_pixel_accuracy_match_the_hand_count(batch_size):
    model = Fixed().train()
    result = evaluate(model, Images([0, 1]), EvalSettings(batch_size=batch_size), torch.device("cpu"),
                      per_image=True)
    assert result["iou"] == pytest.approx(IOU)
    assert result["miou"] == pytest.approx((50 + 60 + 60) / 3)
    assert result["pixel_accuracy"] == pytest.approx(100 * 8 / 11)
    assert result["images"] == 2 and result["miou_subsets"] == {} and result["label_table"] == "fabricated"
    assert result["per_image"]["intersection"].tolist() == INTERSECTION
    assert result["per_image"]["union"].tolist() == UNION
    assert model.training  # put back in the mode it was in
    assert model.calls == [{"mode": "whole"}] * (2 // batch_size)


def test_targets_are_scored_separately_and_averaged():
    datasets = {"first": Images([0], "first"), "second": Images([1], "second")}
    result = evaluate_targets(Fixed(), datasets, EvalSettings(), torch.device("cpu"), per_image=True)
    first = 100 * (1 / 2 + 2 / 3 + 1 / 1) / 3  # image 0 alone: INTERSECTION[0] / UNION[0]
    second = 100 * (1 / 2 + 1 / 2 + 2 / 4) / 3
    assert result["target_miou"] == pytest.approx({"first": first, "second": second})
    assert result["mean_target_miou"] == pytest.approx((first + second) / 2)
    assert result["per_class_iou"]["second"] == pytest.approx({"a": 50.0, "b": 50.0, "c": 50.0})
    assert result["per_image"]["first"]["union"].tolist() == UNION[:1]
    assert result["label_tables"] == {"first": "fabricated", "second": "fabricated"}


def test_a_model_of_another_class_count_is_refused():
    model = Fixed()
    model.num_classes = 19
    with pytest.raises(FisherTuneError, match="predicts 19 classes but data has 3"):
        evaluate(model, Images([0]), EvalSettings(), torch.device("cpu"))


def test_sliding_window_keywords():
    assert Inference().kwargs() == {"mode": "whole"}
    assert Inference(flip=True).kwargs() == {"mode": "whole", "flip": True}
    # windows of 512 px every two thirds of a window, 8 per pass, unless set
    assert Inference("slide").kwargs() == {"mode": "slide", "crop": 512, "stride": 341, "window_batch": 8}
    assert Inference("slide", 6, 5, 2).kwargs() == {"mode": "slide", "crop": 6, "stride": 5,
                                                    "window_batch": 2}
    model = Fixed()
    settings = EvalSettings(Inference("slide", 3))
    evaluate(model, Images([0]), settings, torch.device("cpu"))
    assert model.calls == [{"mode": "slide", "crop": 3, "stride": 2, "window_batch": 8}]


def test_settings_from_a_config():
    config = config_from_dict({"data": {"crop": 28, "workers": 1}, "train": {"amp": "bf16"},
                               "eval": {"batch_size": 3, "mode": "slide", "stride": 10}})
    settings = EvalSettings.from_config(config)
    assert (settings.batch_size, settings.workers) == (3, 1)
    assert settings.inference == Inference("slide", 28, 10, 8, False, "bf16")  # crop: data.crop, amp: train's
    config.eval.amp, config.eval.crop = "off", 14
    assert EvalSettings.from_config(config).inference == Inference("slide", 14, 10, 8, False, "off")
