"""`data.val: holdout:N`: a slice of the training sources kept out of training as source validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fishertune.data.specs import HoldOut
from fishertune.engine.build import build_source_datasets
from fishertune.engine.config import config_from_dict
from fishertune.errors import FisherTuneError


def write_folder(root: Path, prefix: str, count: int, size: int = 12) -> None:
    """`count` images named `<prefix><i>` whose label is the constant train id `i % 19`."""
    for i in range(count):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{prefix}{i:03d}.png")
        label = np.full((size, size), i % 19, np.uint8)
        Image.fromarray(label).save(root / "labels" / f"{prefix}{i:03d}.png")


def write_gtav(root: Path, count: int, size: int = 12) -> None:
    """GTAV layout: palette PNGs holding Cityscapes label ids (7 road on the left, 26 car on the right)."""
    label = np.full((size, size), 7, np.uint8)
    label[:, size // 2:] = 26
    for n in range(1, count + 1):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size, 3), n, np.uint8)).save(root / "images" / f"{n:05d}.png")
        image = Image.fromarray(label, mode="L").convert("P")
        image.putpalette([c for i in range(256) for c in (i, i, i)])
        image.putdata(label.ravel().tolist())
        image.save(root / "labels" / f"{n:05d}.png")


@pytest.fixture
def sources(tmp_path) -> tuple[str, str]:
    write_folder(tmp_path / "big", "big", 30)
    write_folder(tmp_path / "small", "small", 10)
    return f"folder:{tmp_path / 'big'}", f"folder:{tmp_path / 'small'}"


def build(train, val, **data) -> tuple:
    seed = data.pop("seed", 0)
    config = config_from_dict({"data": {"train": train, "val": val, "batch_size": 2, **data},
                               "train": {"seed": seed}})
    train_set, val_sets = build_source_datasets(config)
    return train_set, val_sets


def trained_images(dataset) -> list[str]:
    """Every image the training set draws in an epoch (repeats included)."""
    return [dataset.pairs[i].image.name for i in dataset.order]


@pytest.mark.parametrize("sampling", ["proportional", "equal"])
def test_held_out_images_never_appear_in_training(sources, sampling):
    train_set, val_sets = build(list(sources), "holdout:8", sampling=sampling, crop=8)
    assert list(val_sets) == ["source_val"]
    val = val_sets["source_val"]
    held = [pair.image.name for pair in val.pairs]
    assert len(held) == len(set(held)) == len(val) == 8
    trained = trained_images(train_set)
    assert not set(held) & set(trained)
    everything = {f"big{i:03d}.png" for i in range(30)} | {f"small{i:03d}.png" for i in range(10)}
    assert set(held) | set(trained) == everything  # nothing else is lost
    if sampling == "proportional":
        assert len(trained) == 40 - 8  # every remaining image once
    else:  # both sources fill the epoch with as many items as the larger one has left
        big_left = sum(name.startswith("big") for name in set(trained))
        assert sum(name.startswith("small") for name in trained) == big_left
    # validation is the whole image without the training crop; training items are cropped
    assert val[0]["image"].shape[-2:] == (12, 12) and train_set[0]["image"].shape[-2:] == (8, 8)


def test_the_slice_does_not_follow_the_seed_or_the_method(sources):
    slices, rests = [], []
    for seed in (0, 1, 12345):
        train_set, val_sets = build(list(sources), "holdout:8", seed=seed)
        slices.append([pair.image for pair in val_sets["source_val"].pairs])
        rests.append(sorted(trained_images(train_set)))
    assert slices[0] == slices[1] == slices[2] and rests[0] == rests[1] == rests[2]
    # not simply the first files, and drawn from both sources (the pool, not one source)
    names = [path.name for path in slices[0]]
    assert names != sorted(trained_images(build(list(sources), None)[0]))[:8]
    assert {name[:3] for name in names} == {"big", "sma"}


def test_a_fraction_and_a_count_name_the_same_slice_and_smaller_slices_nest(sources):
    by_count = build(list(sources), "holdout:10")[1]["source_val"]
    by_fraction = build(list(sources), "holdout:0.25")[1]["source_val"]  # 0.25 of 40
    assert [p.image for p in by_count.pairs] == [p.image for p in by_fraction.pairs]
    smaller = build(list(sources), "holdout:4")[1]["source_val"]
    assert {p.image for p in smaller.pairs} < {p.image for p in by_count.pairs}


def test_the_draw_is_uniform_over_the_pool():
    """Each tenth of a 10,000-image pool gives about a tenth of a 2,000-image slice (binomial sd 13.4)."""
    chosen = HoldOut(2000).indices(10_000)
    assert len(np.unique(chosen)) == 2000 and chosen.min() >= 0 and chosen.max() < 10_000
    per_tenth = np.bincount(chosen // 1000, minlength=10)
    assert np.all(np.abs(per_tenth - 200) < 60), per_tenth


def test_source_val_uses_the_sources_label_table(tmp_path):
    """GTAV stores Cityscapes label ids; the held-out items carry train ids (road 0, car 13), unaugmented."""
    write_gtav(tmp_path / "gtav", 6)
    write_folder(tmp_path / "folder", "f", 6)
    train_set, val_sets = build([f"gtav:{tmp_path / 'gtav'}", f"folder:{tmp_path / 'folder'}"], "holdout:6",
                                crop=8)
    val = val_sets["source_val"]
    assert "gtav: Cityscapes label ids" in val.label_table and "folder: " in val.label_table
    gtav_items = [val[i] for i in range(len(val)) if val.pairs[i].image.parent.parent.name == "gtav"]
    assert gtav_items, "the slice holds GTAV images"
    for item in gtav_items:
        expected = np.full((12, 12), 0)
        expected[:, 6:] = 13
        assert np.array_equal(item["label"].numpy(), expected)
        frame = int(item["name"])
        assert np.allclose(item["image"].numpy(), frame / 255.0)  # the stored pixels, not augmented


@pytest.mark.parametrize(("val", "message"), [
    ("holdout:0", "bad hold-out 'holdout:0'"),
    ("holdout:-5", "bad hold-out 'holdout:-5'"),
    ("holdout:1.5", "bad hold-out 'holdout:1.5'"),
    ("holdout:1.0", "bad hold-out 'holdout:1.0'"),
    ("holdout:many", "bad hold-out 'holdout:many'"),
    ("holdout:", "bad hold-out 'holdout:'"),
])
def test_a_bad_hold_out_is_refused_when_the_config_loads(val, message):
    with pytest.raises(FisherTuneError) as error:
        config_from_dict({"data": {"train": "folder:x", "val": val}})
    assert str(error.value).startswith(f"data.val: {message}") and "\n" not in str(error.value)


def test_holdout_is_not_a_dataset_spec():
    with pytest.raises(FisherTuneError, match=r"data.targets\[0\]: 'holdout:5' is not a dataset"):
        config_from_dict({"data": {"targets": ["holdout:5"]}})


@pytest.mark.parametrize(("val", "message"), [
    ("holdout:40", "data.val holdout:40 holds out 40 of the 40 training source images"),
    ("holdout:100", "data.val holdout:100 holds out 100 of the 40 training source images"),
    ("holdout:0.001", "data.val holdout:0.001 holds out 0 of the 40 training source images"),
])
def test_a_hold_out_of_none_or_all_images_is_refused(sources, val, message):
    with pytest.raises(FisherTuneError, match=message):
        build(list(sources), val)


def test_a_hold_out_that_empties_a_source_is_refused(tmp_path):
    write_folder(tmp_path / "one", "one", 1)
    write_folder(tmp_path / "many", "many", 9)
    # the smallest slice that takes the single image of `one` (pool index 0)
    size = next(n for n in range(1, 10) if 0 in HoldOut(n).indices(10))
    with pytest.raises(FisherTuneError, match=f"holdout:{size} holds out every image of one"):
        build([f"folder:{tmp_path / 'one'}", f"folder:{tmp_path / 'many'}"], f"holdout:{size}")
