"""The synthetic street-scene generator: determinism, label validity, domains, geometry, layout on disk."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fishertune.benchmark import scenes as sl
from fishertune.benchmark.synthetic import DOMAINS, TARGET_DOMAINS, generate, render_scene, scene_layout
from fishertune.data.datasets import FolderDataset
from fishertune.data.labels import NUM_CLASSES
from fishertune.errors import FisherTuneError


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_generate_writes_the_documented_layout_and_is_deterministic(tmp_path):
    first = generate(tmp_path / "a", n=2, size=32, seed=3, progress=False)
    generate(tmp_path / "b", n=2, size=32, seed=3, progress=False)
    generate(tmp_path / "c", n=2, size=32, seed=4, progress=False)
    assert set(first) == set(DOMAINS)
    for domain in DOMAINS:
        for index in ("00000", "00001"):
            assert (tmp_path / "a" / domain / "images" / f"{index}.png").is_file()
            assert (tmp_path / "a" / domain / "labels" / f"{index}.png").is_file()
    a, b, c = (_tree_bytes(tmp_path / name) for name in "abc")
    assert len(a) == 2 * 2 * len(DOMAINS)
    assert a == b
    assert all(a[key] != c[key] for key in a if "/images/" in key)
    assert not list((tmp_path / "a").rglob("*.tmp"))


def test_generate_matches_render_scene_and_loads_as_a_folder_dataset(tmp_path):
    generate(tmp_path, domains=["fog", "source"], n=2, size=(24, 40), seed=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["fog", "source"]
    image, label = render_scene(1, "fog", size=(24, 40), seed=1)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "fog" / "images" / "00001.png")), image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "fog" / "labels" / "00001.png")), label)
    dataset = FolderDataset(tmp_path / "fog")
    assert len(dataset) == 2 and dataset.name == "fog"
    item = dataset[1]
    assert item["image"].shape == (3, 24, 40) and item["label"].shape == (24, 40)
    assert np.array_equal(item["label"].numpy(), label)


def test_labels_are_valid_train_ids_and_cover_many_classes():
    seen = set()
    for index in range(8):
        image, label = render_scene(index, "source", size=96, seed=0)
        assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
        assert label.dtype == np.uint8 and label.shape == (96, 96)
        values = set(np.unique(label).tolist())
        assert values <= set(range(NUM_CLASSES)) | {255}
        seen |= values
    assert len(seen - {255}) >= 12, sorted(seen)


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_every_domain_renders_a_non_trivial_image_different_from_the_source_style(domain):
    image, label = render_scene(0, domain, size=48, seed=0)
    assert image.shape == (48, 48, 3) and image.std() > 5
    if domain in TARGET_DOMAINS:
        # same scene, source colours: a target must differ in appearance by a clear margin
        layout = scene_layout(0, "test", 48, 0)
        from fishertune.benchmark.synthetic import render_layout

        source_look, _ = render_layout(layout, "source", 0, 0)
        assert np.abs(image.astype(float) - source_look).mean() > 15
        assert np.array_equal(label, layout.label)


@pytest.mark.slow
def test_target_domains_share_label_maps_and_splits_share_the_class_distribution():
    for index in range(3):
        labels = [render_scene(index, domain, size=40, seed=5)[1] for domain in TARGET_DOMAINS]
        assert all(np.array_equal(labels[0], other) for other in labels[1:])
    # the train, val and test streams are different scenes drawn from one distribution
    hist = {}
    for scenes in ("train", "val", "test"):
        counts = np.zeros(NUM_CLASSES)
        for index in range(60):
            label = scene_layout(index, scenes, 48, 0).label
            counts += np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES]
        hist[scenes] = counts / counts.sum()
    assert not np.array_equal(scene_layout(0, "train", 48, 0).label, scene_layout(0, "test", 48, 0).label)
    for scenes in ("val", "test"):
        assert np.abs(hist[scenes] - hist["train"]).sum() < 0.12, (scenes, hist[scenes], hist["train"])


def test_ground_depth_follows_the_pinhole_model_and_fog_thickens_with_depth():
    layout = scene_layout(2, "test", 64, 0)
    ground = layout.facing == sl.FACING_GROUND
    depth = np.where(ground, layout.depth, np.nan)
    for column in range(64):
        values = depth[:, column][~np.isnan(depth[:, column])]
        assert np.all(np.diff(values) <= 1e-4)  # nearer going down the image
    sky = layout.label == sl.SKY
    assert np.isinf(layout.depth[sky]).all() and np.isfinite(layout.depth[~sky]).all()
    # fog: far pixels lose more contrast than near ones, averaged over scenes
    near_std, far_std = [], []
    for index in range(6):
        layout = scene_layout(index, "test", 64, 0)
        image, _ = render_scene(index, "fog", 64, 0)
        grey = image.astype(float).mean(axis=2)
        near = np.isfinite(layout.depth) & (layout.depth < 10)
        far = np.isfinite(layout.depth) & (layout.depth > 40)
        near_std.append(grey[near].std())
        far_std.append(grey[far].std())
    assert np.mean(far_std) < 0.6 * np.mean(near_std)


def test_night_is_darker_than_day():
    day = np.mean([render_scene(i, "photo", 48, 0)[0].mean() for i in range(4)])
    night = np.mean([render_scene(i, "night", 48, 0)[0].mean() for i in range(4)])
    assert night < 0.5 * day


def test_nearer_objects_occlude_farther_ones_whatever_the_drawing_order():
    cam = sl.Camera(64, 64, focal=50.0, horizon=30.0, vp_x=32.0, cam_h=1.5, curve=0.0)
    box = [("rect", sl.CAR, sl.MAIN, -1.0, 1.0, 0.0, 1.5)]
    for order in ((10.0, 20.0), (20.0, 10.0)):
        canvas = sl.Canvas(64, 64)
        for z in order:
            person_or_car = box if z == 10.0 else [("rect", sl.PERSON, sl.MAIN, -1.0, 1.0, 0.0, 1.5)]
            sl._billboard(person_or_car, 0.0, 0.5)(canvas, cam, z)
        assert (canvas.label == sl.CAR).sum() > 0
        # the far person (half the size) is entirely hidden behind the near car
        assert (canvas.label == sl.PERSON).sum() == 0
        assert canvas.depth[canvas.label == sl.CAR].max() == 10.0
    # size scales as 1/depth: 2 m wide at z=10 with f=50 is 10 pixels
    assert (canvas.label == sl.CAR).sum(axis=1).max() == 10


def test_bad_arguments_are_named():
    with pytest.raises(FisherTuneError, match="did you mean 'night'"):
        render_scene(0, "nigth")
    with pytest.raises(FisherTuneError, match="at least 1"):
        generate("/nonexistent/never", n=0, progress=False)
    with pytest.raises(FisherTuneError, match="at least 16"):
        render_scene(0, "source", size=8)
