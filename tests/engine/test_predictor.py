"""The predictor on a fabricated model: where outputs go, what each format holds, and refusals before any
write. Expected values are the Cityscapes tables themselves (train id 0 road = label id 7, colour
(128, 64, 128); 1 sidewalk = 8, (244, 35, 232); 2 building = 11, (70, 70, 70))."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fishertune.data.classes import ClassSet
from fishertune.engine.evaluator import Inference
from fishertune.engine.predictor import plan_outputs, predict_images
from fishertune.errors import FisherTuneError

CPU = torch.device("cpu")
TRAIN_IDS = [0, 1, 2, 0]  # what the model predicts in every row of a 4-px-wide image
LABEL_IDS = [7, 8, 11, 7]
COLOURS = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (128, 64, 128)]


class Columns(nn.Module):
    """Predicts train id (column % 3) at every pixel, whatever the image."""

    num_classes = 19

    def predict(self, images, **kwargs):
        batch, _, height, width = images.shape
        ids = torch.arange(width).remainder(3).expand(batch, height, width)
        return nn.functional.one_hot(ids, 19).permute(0, 3, 1, 2).float()


def write_image(path, colour=(100, 50, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((2, 4, 3), colour, np.uint8)).save(path)
    return path


@pytest.fixture
def inputs(tmp_path):
    return [write_image(tmp_path / "in" / "city" / "a.png"), write_image(tmp_path / "in" / "b.png")]


def read(path):
    return np.asarray(Image.open(path))


def test_train_ids_mirror_the_input_tree(inputs, tmp_path):
    out = tmp_path / "out"
    written = predict_images(Columns(), inputs, out, Inference(), CPU, fmt="trainid")
    assert written == [out / "city" / "a.png", out / "b.png"]
    for path in written:
        assert read(path).tolist() == [TRAIN_IDS, TRAIN_IDS]


def test_label_ids_and_colours(inputs, tmp_path):
    (label_ids, _) = predict_images(Columns(), inputs, tmp_path / "ids", Inference(), CPU, fmt="labelid")
    assert read(label_ids).tolist() == [LABEL_IDS, LABEL_IDS]
    (colours, _) = predict_images(Columns(), inputs, tmp_path / "colours", Inference(), CPU, fmt="color")
    assert read(colours).tolist() == [[list(c) for c in COLOURS]] * 2


def test_overlay_blends_image_and_colours_half_and_half(inputs, tmp_path):
    written = predict_images(Columns(), inputs[:1], tmp_path / "out", Inference(), CPU, overlay=True)
    assert [p.name for p in written] == ["a.png", "a_overlay.png"]
    road = (round((100 + 128) / 2), round((50 + 64) / 2), round((0 + 128) / 2))
    assert tuple(read(written[1])[0, 0]) == road


def test_outputs_relative_to_a_dataset_root(inputs, tmp_path):
    written = predict_images(Columns(), inputs[:1], tmp_path / "out", Inference(), CPU, base=tmp_path)
    assert written == [tmp_path / "out" / "in" / "city" / "a.png"]


def test_clashing_outputs_are_refused_before_any_write(tmp_path):
    clash = [write_image(tmp_path / "in" / "a.png"), write_image(tmp_path / "in" / "a.jpg")]
    with pytest.raises(FisherTuneError, match="would both be written to"):
        predict_images(Columns(), clash, tmp_path / "out", Inference(), CPU)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FisherTuneError, match="would overwrite the input"):
        plan_outputs(clash[:1], tmp_path / "in")


def test_an_interrupted_predict_leaves_no_output(inputs, tmp_path):
    """Outputs are staged under hidden names and renamed at the end: an interruption after the first image
    leaves none of them (and no staged file); a finished run leaves exactly its outputs."""
    out = tmp_path / "out"

    class Interrupted(Columns):
        calls = 0

        def predict(self, images, **options):
            Interrupted.calls += 1
            if Interrupted.calls == 2:
                raise KeyboardInterrupt
            return super().predict(images, **options)

    with pytest.raises(KeyboardInterrupt):
        predict_images(Interrupted(), inputs, out, Inference(), CPU, overlay=True)
    assert not [p for p in out.rglob("*") if p.is_file()]
    written = predict_images(Columns(), inputs, out, Inference(), CPU, overlay=True)
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(written)
    assert len(written) == 2 * len(inputs)


def test_bad_formats_and_inputs_are_refused(inputs, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FisherTuneError, match="unknown format 'jpeg'"):
        predict_images(Columns(), inputs, out, Inference(), CPU, fmt="jpeg")
    own = ClassSet(("a", "b", "c"), np.zeros((3, 3), np.uint8))
    with pytest.raises(FisherTuneError, match="labelid"):
        predict_images(Columns(), inputs, out, Inference(), CPU, fmt="labelid", classes=own)
    with pytest.raises(FisherTuneError, match="image not found"):
        predict_images(Columns(), [*inputs, tmp_path / "missing.png"], out, Inference(), CPU)
    assert not out.exists()
