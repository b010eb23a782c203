"""Custom class sets (`data.classes`): a 3-class folder dataset through train -> eval -> predict -> export."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from export_helpers import train_run
from PIL import Image
from safetensors.torch import load_file

import fishertune
from fishertune.cli.main import main
from fishertune.data.classes import CITYSCAPES, ClassSet
from fishertune.data.datasets import build_dataset
from fishertune.errors import FisherTuneError

NAMES = ["ground", "structure", "object"]
PALETTE = [[10, 20, 30], [200, 100, 0], [0, 250, 120]]
IGNORE = 254
CLASSES = {"names": NAMES, "palette": PALETTE, "ignore_index": IGNORE}


def three_class_copy(source: Path, target: Path) -> Path:
    """The scenes of `source` with labels folded to 3 classes (train id % 3) and the top-left 4x4 pixels
    (and any 255) marked ignore, stored as 254."""
    (target / "labels").mkdir(parents=True)
    shutil.copytree(source / "images", target / "images")
    for path in sorted((source / "labels").glob("*.png")):
        label = np.array(Image.open(path))
        folded = np.where(label == 255, IGNORE, label % 3).astype(np.uint8)
        folded[:4, :4] = IGNORE
        Image.fromarray(folded).save(target / "labels" / path.name)
    return target


@pytest.fixture(scope="module")
def tri(scenes, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tri")
    three_class_copy(scenes / "source", root / "source")
    three_class_copy(scenes / "fog", root / "fog")
    return root


@pytest.fixture(scope="module")
def tri_run(tri, base_file, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tri_run")
    return train_run(folder, tri, "fishertune", base_file, {
        "data": {"classes": CLASSES, "targets": [f"folder:{tri / 'fog'}"]}}, data="source")


def test_the_ignore_value_is_read_as_255(tri):
    item = build_dataset(f"folder:{tri / 'fog'}", classes=ClassSet.from_config(CLASSES))[0]
    stored = np.array(Image.open(tri / "fog" / "labels" / "00000.png"))
    np.testing.assert_array_equal(item["label"].numpy(), np.where(stored == IGNORE, 255, stored))
    assert set(np.unique(item["label"].numpy())) == {0, 1, 2, 255}


def test_train_eval_predict_export_follow_the_class_set(tri_run, tri, tmp_path):
    head = load_file(tri_run / "model.safetensors")["head.classifier.weight"]
    assert head.shape[0] == 3
    entry = json.loads((tri_run / "results.json").read_text())["methods"]["fishertune"]
    assert list(entry["per_class_iou"]["fog"]) == NAMES

    assert main(["eval", str(tri_run), "--json", str(tmp_path / "eval.json"), "--no-progress"]) == 0
    assert list(json.loads((tmp_path / "eval.json").read_text())["per_class_iou"]["fog"]) == NAMES

    image = tri / "fog" / "images" / "00001.png"
    assert main(["predict", str(tri_run), str(image), "--out", str(tmp_path / "pred")]) == 0
    mask = np.array(Image.open(tmp_path / "pred" / "00001.png").convert("RGB")).reshape(-1, 3)
    assert {tuple(c) for c in mask} <= {tuple(c) for c in PALETTE}

    assert main(["export", str(tri_run), "--out", str(tmp_path / "export")]) == 0
    model = fishertune.load_pretrained(tmp_path / "export")
    assert model.classes.names == tuple(NAMES)
    ids = model.predict(Image.open(image))
    assert ids.max() < 3
    np.testing.assert_array_equal(ids, fishertune.load_pretrained(tri_run).predict(Image.open(image)))
    assert "3: ground, structure, object" in (tmp_path / "export" / "README.md").read_text()
    assert main(["predict", str(tmp_path / "export"), str(image), "--out", str(tmp_path / "pred2")]) == 0
    assert (tmp_path / "pred" / "00001.png").read_bytes() == \
        (tmp_path / "pred2" / "00001.png").read_bytes()


def test_a_label_outside_the_set_is_refused(tri, base_file, tmp_path, capsys):
    bad = three_class_copy(tri / "source", tmp_path / "bad")
    label = np.array(Image.open(bad / "labels" / "00003.png"))
    label[0, 0] = 3
    Image.fromarray(label).save(bad / "labels" / "00003.png")
    config = {"model": {"backbone": "dinov2", "weights": str(base_file)}, "method": {"name": "frozen"},
              "data": {"train": f"folder:{bad}", "classes": CLASSES, "batch_size": 4},
              "train": {"steps": 2, "prepare_batches": 1}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: label ") and "00003.png holds values outside 0-2 and 254" in err


def test_benchmark_datasets_keep_cityscapes(tmp_path):
    with pytest.raises(FisherTuneError, match="folder: datasets only"):
        build_dataset(f"cityscapes:{tmp_path}", classes=ClassSet.from_config(NAMES))
    assert ClassSet.from_config(None) is CITYSCAPES


@pytest.mark.parametrize("raw, message", [
    ([], "non-empty list"),
    (["a", "b", "a"], "names 'a' twice"),
    ({"names": ["a", "b"], "palette": [[0, 0, 0]]}, "one \\[r, g, b\\]"),
    ({"names": ["a", "b"], "palette": [[0, 0, 0], [0, 0, 256]]}, "integers 0-255"),
    ({"names": ["a", "b"], "ignore_index": 1}, "ignore_index must be an integer from 2"),
    ({"names": ["a"], "colours": []}, "unknown key data.classes.colours"),
])
def test_bad_class_sets_are_one_line_errors(raw, message):
    with pytest.raises(FisherTuneError, match=message):
        ClassSet.from_config(raw)


def test_default_palette_extends_cityscapes_with_distinct_colours():
    classes = ClassSet.from_config([f"c{i}" for i in range(30)])
    assert classes.palette.shape == (30, 3)
    np.testing.assert_array_equal(classes.palette[:19], CITYSCAPES.palette)
    assert len({tuple(c) for c in classes.palette}) == 30


def test_data_check_follows_the_config_classes(tri, tri_run, tmp_path, capsys):
    """Against the 19 classes the 3-class labels' ignore value 254 is out of range; against the run's
    config they are clean, and a value outside the set is named."""
    assert main(["data", "check", f"folder:{tri / 'fog'}"]) == 1
    assert "outside 0-18 and 255: 254" in capsys.readouterr().out
    assert main(["data", "check", f"folder:{tri / 'fog'}", "--config", str(tri_run / "config.yaml")]) == 0
    bad = three_class_copy(tri / "fog", tmp_path / "bad")
    label = np.array(Image.open(bad / "labels" / "00001.png"))
    label[1, 1] = 9
    Image.fromarray(label).save(bad / "labels" / "00001.png")
    capsys.readouterr()
    assert main(["data", "check", f"folder:{bad}", "--config", str(tri_run / "config.yaml")]) == 1
    assert "00001.png: label values outside 0-2 and 254: 9" in capsys.readouterr().out
