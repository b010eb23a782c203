"""The shipped multi-source protocol end to end on a fabricated GTAV + SYNTHIA -> Cityscapes / BDD100K /
Mapillary tree in the official layouts (with GTAV's size mismatch, BDD100K's images without a mask and
SYNTHIA's 16-bit labels), the tiny backbone, and `--set` for paths, steps and sizes; then submission files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import png
import pytest
import yaml
from cityscapesscripts.helpers.labels import trainId2label
from PIL import Image
from scipy.io import savemat

from fishertune.cli.main import main

SIZE = 32


def _image(path: Path, seed: int, height: int = SIZE, width: int = SIZE, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def _ids(path: Path, seed: int, values: list[int], palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).choice(values, (SIZE, SIZE)).astype(np.uint8)
    image = Image.fromarray(array, mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([c for i in range(256) for c in (i, i, i)])
        image.putdata(array.ravel().tolist())
    image.save(path)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dgss")
    for n in range(1, 9):  # GTAV: label ids in palette PNGs; frame 3's image is 2 px taller than its label
        _image(root / "gtav" / "images" / f"{n:05d}.png", n, height=SIZE + 2 if n == 3 else SIZE)
        _ids(root / "gtav" / "labels" / f"{n:05d}.png", n, [7, 8, 11, 21, 23, 26], palette=True)
    savemat(root / "gtav" / "split.mat", {"trainIds": np.arange(1, 7)[:, None],
                                          "valIds": np.array([[7], [8]]), "testIds": np.zeros((0, 1))})
    for n in range(4):  # SYNTHIA: 16-bit RGB labels, class in the first channel
        _image(root / "synthia" / "RGB" / f"{n:07d}.png", 100 + n)
        classes = np.random.default_rng(n).choice([1, 2, 3, 4, 6, 8], (SIZE, SIZE)).astype(np.uint16)
        label = np.stack([classes, classes * 300, np.zeros_like(classes)], -1)
        (root / "synthia" / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
        with open(root / "synthia" / "GT" / "LABELS" / f"{n:07d}.png", "wb") as file:
            png.Writer(SIZE, SIZE, bitdepth=16, greyscale=False).write(file, label.reshape(SIZE, -1))
    for split, city, frames in (("val", "frankfurt", 2), ("test", "berlin", 2)):
        for n in range(frames):
            stem = f"{city}_{n:06d}_000019"
            _image(root / "cityscapes" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 200 + n)
            gt = root / "cityscapes" / "gtFine" / split / city
            _ids(gt / f"{stem}_gtFine_labelIds.png", n, [7, 11, 26])
    for n, name in enumerate(["7d2f7975-e0c1c5a7", "7d4a9094-0455564b", "7dc08598-f42e2015"]):
        _image(root / "bdd" / "images" / "10k" / "val" / f"{name}.jpg", 300 + n, fmt="JPEG")
        if n != 1:  # one image of the archive has no mask
            _ids(root / "bdd" / "labels" / "sem_seg" / "masks" / "val" / f"{name}.png", n, [0, 2, 13])
    for n in range(2):
        _image(root / "vistas" / "validation" / "images" / f"key{n}.jpg", 400 + n, fmt="JPEG")
        _ids(root / "vistas" / "validation" / "labels" / f"key{n}.png", n, [13, 17, 27, 55], palette=True)
    for condition in ("fog", "night", "rain", "snow"):
        _image(root / "acdc" / "rgb_anon" / condition / "test" / "GOPR0477"
               / f"GOPR0477_frame_{len(condition):06d}_rgb_anon.png", 500)
    return root


@pytest.fixture(scope="module")
def protocol_run(tree, tmp_path_factory) -> tuple[Path, str]:
    """(run folder, what training wrote on stderr)."""
    run = tmp_path_factory.mktemp("runs") / "gtav_synthia"
    sets = {"data.train": f"[gtav:{tree / 'gtav'}:all, synthia:{tree / 'synthia'}]",
            "data.val": "holdout:3",  # the protocol's holdout:500, scaled to the 12 fabricated source images
            "data.targets": f"[cityscapes:{tree / 'cityscapes'}:val, bdd100k:{tree / 'bdd'}:val, "
                            f"mapillary:{tree / 'vistas'}:validation]",
            "train.warmup_steps": 1, "train.steps": 2, "train.prepare_batches": 1, "train.lr_warmup": 0,
            "train.eval_every": 0, "train.checkpoint_every": 0,
            # sizes for a 32-px test model (the protocol's are for 512-px crops on a GPU)
            "data.crop": SIZE, "data.batch_size": 4, "data.workers": 0, "eval.crop": SIZE,
            "eval.stride": SIZE}
    args = ["train", "protocols/gtav_synthia_to_cityscapes_bdd_mapillary.yaml", "backbones/tiny.yaml",
            "--out", str(run), "--no-progress"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(args) == 0
    return run, err.getvalue()


def test_the_multi_source_protocol_trains_and_evaluates(protocol_run, tree, tmp_path, capsys):
    protocol_run, train_err = protocol_run
    notes = [line for line in train_err.splitlines() if line.startswith("note: ")]
    assert notes == ["note: gtav: 1 image(s) differ in size from their label and are resized to it "
                     "(bilinear): 00003.png",
                     "note: bdd100k: skipped 1 image(s) without a label: 7d4a9094-0455564b.jpg"]
    config = yaml.safe_load((protocol_run / "config.yaml").read_text())
    assert config["data"]["train"] == [f"gtav:{tree / 'gtav'}:all", f"synthia:{tree / 'synthia'}:all:19"]
    assert config["data"]["targets"][2] == f"mapillary:{tree / 'vistas'}:validation:robustnet"
    assert config["data"]["val"] == "holdout:3"
    validation = [json.loads(line) for line in (protocol_run / "log.jsonl").read_text().splitlines()
                  if json.loads(line).get("phase") == "val"]
    assert len(validation) == 1 and 0 <= validation[0]["source_miou"] <= 100
    assert config["method"]["name"] == "fishertune"
    assert config["model"]["backbone_config"]["hidden_size"] == 32  # the tiny backbone
    out = tmp_path / "eval.json"
    assert main(["eval", str(protocol_run), "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    trained = json.loads((protocol_run / "results.json").read_text())["methods"]["fishertune"]
    assert list(result["target_miou"]) == ["cityscapes", "bdd100k", "mapillary"]
    assert result["target_miou"] == trained["target_miou"]
    assert all(0 <= v <= 100 for v in result["target_miou"].values())
    assert result["label_tables"] == {"cityscapes": "Cityscapes label ids (cityscapesscripts)",
                                      "bdd100k": "train ids", "mapillary": "Mapillary v1.2 -> 19 (robustnet)"}
    assert set(result["subset_miou"]["cityscapes"]) == {"16", "13"}


def test_submission_files_for_cityscapes_and_acdc_test(protocol_run, tree, tmp_path, capsys):
    protocol_run, _ = protocol_run
    out = tmp_path / "cityscapes_submit"
    assert main(["predict", str(protocol_run), "--data", f"cityscapes:{tree / 'cityscapes'}:test",
                 "--format", "labelid", "--out", str(out)]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == [f"leftImg8bit/test/berlin/berlin_{n:06d}_000019_leftImg8bit.png" for n in range(2)]
    label_ids = np.asarray(Image.open(out / written[0]))
    valid_ids = {trainId2label[t].id for t in range(19)}
    assert label_ids.shape == (SIZE, SIZE) and set(np.unique(label_ids)) <= valid_ids
    acdc = tmp_path / "acdc_submit"
    assert main(["predict", str(protocol_run), "--data", f"acdc:{tree / 'acdc'}:test:fog",
                 "--format", "trainid", "--out", str(acdc)]) == 0
    assert [p.relative_to(acdc).as_posix() for p in acdc.rglob("*.png")] == [
        "rgb_anon/fog/test/GOPR0477/GOPR0477_frame_000003_rgb_anon.png"]
    capsys.readouterr()
    assert main(["eval", str(protocol_run), "--data", f"acdc:{tree / 'acdc'}:test", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "acdc split 'test' has no labels" in err[0], err


def test_data_check_reports_counts_table_histogram_and_verdict(tree, capsys):
    assert main(["data", "check", f"gtav:{tree / 'gtav'}", "--histogram"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "splits: all 8, train 6, val 2, test 0"
    assert out[1] == "gtav: 8 images, 8 labelled; label table: Cityscapes label ids (cityscapesscripts)"
    assert out[2].startswith("note: ") and "00003.png" in out[2] and "resized to the label" in out[2]
    rows = {" ".join(line.split()[1:-2]): int(line.split()[-2].replace(",", ""))
            for line in out if line.split()[0].isdigit()}
    assert len(rows) == 20 and sum(rows.values()) == 8 * SIZE * SIZE  # 19 train ids and ignore
    # the labels hold ids 7 road, 8 sidewalk, 11 building, 21 vegetation, 23 sky, 26 car only
    assert {name for name, pixels in rows.items() if pixels} == {"road", "sidewalk", "building", "vegetation",
                                                                  "sky", "car"}
    assert out[-1] == "OK: every file is fine (gtav: 8 images, 8 labelled, 1 note(s))"


def test_the_protocols_hold_out_is_checked_against_the_sources_before_the_model(tree, tmp_path, capsys):
    """The shipped holdout:500 is more than the 12 fabricated source images: one line, before the (here
    missing) backbone weights are looked at, and no run folder."""
    run = tmp_path / "run"
    args = ["train", "protocols/gtav_synthia_to_cityscapes_bdd_mapillary.yaml", "backbones/tiny.yaml",
            "--set", f"data.train=[gtav:{tree / 'gtav'}:all, synthia:{tree / 'synthia'}]",
            "--set", "data.targets=[]", "--set", f"model.weights={tmp_path / 'missing.safetensors'}",
            "--out", str(run), "--no-progress"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: data.val holdout:500 holds out 500 of the 12 training source images: it must "
                       "hold out at least 1 and leave some to train on"), err
    assert not [line for line in err if not line.startswith(("note: ", "error: "))]
    assert not run.exists()
