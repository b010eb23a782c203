"""Every plot writes a valid, non-trivial PNG atomically; colours follow the Cityscapes palette."""

import os

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from fishertune.errors import FisherTuneError
from fishertune.report import plots

BLOCK_NAMES = [f"encoder.layer.{b}.{m}" for b in range(3) for m in (
    "attention.q_proj.weight", "attention.k_proj.weight", "attention.v_proj.weight",
    "attention.o_proj.weight", "mlp.fc1.weight", "norm1.weight")] + ["embeddings.cls_token"]


def _scores(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(4, 8, generator=generator) ** 4 for name in BLOCK_NAMES}


def assert_png(path, min_size=(300, 200)):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 5  # something was drawn, not a blank canvas
    leftovers = [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]
    assert leftovers == []


def test_miou_bars(tmp_path, multi_seed_results, single_seed_results):
    assert_png(plots.miou_bars(multi_seed_results, tmp_path / "multi.png"))
    assert_png(plots.miou_bars(single_seed_results, tmp_path / "single.png"))


def test_fisher_heatmap(tmp_path):
    assert_png(plots.fisher_heatmap(_scores(), tmp_path / "heat.png"))
    zeros = {name: torch.zeros(2) for name in BLOCK_NAMES}  # no positive value: linear scale, still drawn
    assert_png(plots.fisher_heatmap(zeros, tmp_path / "zeros.png", reduce="max", score_name="Fisher"))
    with pytest.raises(FisherTuneError, match="empty"):
        plots.fisher_heatmap({}, tmp_path / "none.png")


def test_selection_breakdown(tmp_path):
    scores = _scores()
    threshold = torch.cat([s.flatten() for s in scores.values()]).quantile(0.9)
    masks = {name: s > threshold for name, s in scores.items()}
    assert_png(plots.selection_breakdown(masks, tmp_path / "analytic.png"))
    generator = torch.Generator().manual_seed(1)
    reference = {name: torch.rand(m.shape, generator=generator) < 0.1 for name, m in masks.items()}
    assert_png(plots.selection_breakdown(masks, tmp_path / "reference.png", reference_masks=reference))
    with pytest.raises(FisherTuneError, match="cover"):
        plots.selection_breakdown(masks, tmp_path / "bad.png",
                                  reference_masks={BLOCK_NAMES[0]: masks[BLOCK_NAMES[0]]})


def test_selection_growth(tmp_path):
    assert_png(plots.selection_growth([(0, 100), (20, 250), (40, 300)], tmp_path / "list.png", total=1000))
    assert_png(plots.selection_growth({40: 300, 0: 100, 20: 250}, tmp_path / "dict.png"))
    tuner_history = [{"step": 0, "ratio": 0.01, "selected": 10}, {"step": 50, "ratio": 0.02, "selected": 20}]
    assert_png(plots.selection_growth(tuner_history, tmp_path / "tuner.png"))
    with pytest.raises(FisherTuneError, match="empty"):
        plots.selection_growth([], tmp_path / "none.png")


def test_prediction_grid_accepts_hwc_float_chw_tensor_and_uint8(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 19, (16, 16))
    label[:2] = 255
    preds = {"fishertune": label.clip(0, 18), "full": rng.integers(0, 19, (16, 16))}
    examples = {
        "fog": [(rng.random((16, 16, 3)), label, preds)],
        "night": [(torch.rand(3, 16, 16), torch.as_tensor(label),
                   {k: torch.as_tensor(v) for k, v in preds.items()}),
                  ((rng.random((16, 16, 3)) * 255).astype(np.uint8), label, {"full": preds["full"]})],
    }
    assert_png(plots.prediction_grid(examples, tmp_path / "grid.png"))
    with pytest.raises(FisherTuneError, match="shape"):
        bad = {"fog": [(rng.random((16, 16, 3)), label, {"full": label[:8]})]}
        plots.prediction_grid(bad, tmp_path / "x.png")


def test_prediction_grid_draws_cityscapes_colours_and_black_ignore(tmp_path):
    label = np.zeros((24, 24), dtype=np.int64)  # road everywhere...
    label[:, 12:] = 10  # ...and sky on the right
    pred = np.full((24, 24), 13)  # car everywhere
    path = plots.prediction_grid({"fog": [(np.ones((24, 24, 3)), label, {"full": pred})]}, tmp_path / "g.png")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    counts = {name: int((pixels == rgb).all(axis=1).sum())
              for name, rgb in (("road", (128, 64, 128)), ("sky", (70, 130, 180)), ("car", (0, 0, 142)))}
    assert all(count > 200 for count in counts.values()), counts


def test_a_failed_write_leaves_neither_the_target_nor_a_temp_file(tmp_path, monkeypatch):
    def half_write_then_fail(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        plots.selection_growth([(0, 1)], tmp_path / "growth.png")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_the_old_file(tmp_path):
    path = tmp_path / "growth.png"
    path.write_bytes(b"old")
    plots.selection_growth([(0, 1), (5, 3)], path)
    assert_png(path)
