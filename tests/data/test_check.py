"""`check_dataset` names every bad file once, with its kind of problem, and nothing when clean."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fishertune.data.check import check_dataset
from fishertune.errors import FisherTuneError


def test_a_clean_folder_has_no_problems(tmp_path, fabricate):
    write_image, write_label = fabricate
    for name in ("a", "b"):
        write_image(tmp_path / "images" / f"{name}.png")
        write_label(tmp_path / "labels" / f"{name}.png", [0, 18, 255])
    assert check_dataset(f"folder:{tmp_path}") == []


def test_two_images_sharing_one_label_are_named(tmp_path, fabricate):
    write_image, write_label = fabricate
    write_image(tmp_path / "images" / "a.png")
    write_image(tmp_path / "images" / "a.jpg")
    write_label(tmp_path / "labels" / "a.png", [0, 1])
    (problem,) = check_dataset(f"folder:{tmp_path}")
    assert "labels/a.png: the label of 2 images (a.jpg, a.png)" in problem or \
        "labels/a.png: the label of 2 images (a.png, a.jpg)" in problem


def test_every_kind_of_bad_file_is_named(tmp_path, fabricate):
    write_image, write_label = fabricate
    images, labels = tmp_path / "images", tmp_path / "labels"
    write_image(images / "good.png")
    write_label(labels / "good.png", [1, 2])
    write_image(images / "no_label.png")
    write_label(labels / "no_image.png", [1])
    write_image(images / "corrupt_image.png").write_bytes(b"\x89PNG broken")
    write_label(labels / "corrupt_image.png", [1])
    write_image(images / "corrupt_label.png")
    (labels / "corrupt_label.png").write_bytes(b"garbage")
    write_image(images / "wrong_size.png", 6, 9)
    write_label(labels / "wrong_size.png", [1])
    write_image(images / "bad_values.png")
    write_label(labels / "bad_values.png", [0, 19, 254, 255])
    write_image(images / "colour_label.png")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(labels / "colour_label.png")
    problems = check_dataset(f"folder:{tmp_path}")
    by_file = {name: [line for line in problems if f"/{name}" in line]
               for name in ("good.png", "no_image.png", "no_label.png", "corrupt_image.png",
                            "corrupt_label.png", "wrong_size.png", "bad_values.png", "colour_label.png")}
    assert len(problems) == 7, problems
    assert "label without an image" in by_file["no_image.png"][0]
    assert "image without a label" in by_file["no_label.png"][0]
    assert "cannot read image" in by_file["corrupt_image.png"][0]
    assert "cannot read label" in by_file["corrupt_label.png"][0]
    assert "label is 8x6 but the image is 9x6" in by_file["wrong_size.png"][0]
    assert "outside 0-18 and 255: 19, 254" in by_file["bad_values.png"][0]
    assert "colour mode RGB" in by_file["colour_label.png"][0]
    assert by_file["good.png"] == []
    assert all(len(lines) == 1 for name, lines in by_file.items() if name != "good.png")


def test_official_layouts_list_missing_labels_instead_of_stopping(tmp_path, fabricate):
    write_image, write_label = fabricate
    city = tmp_path / "leftImg8bit" / "val" / "bonn"
    write_image(city / "bonn_000000_000019_leftImg8bit.png")
    write_image(city / "bonn_000001_000019_leftImg8bit.png")
    gt = tmp_path / "gtFine" / "val" / "bonn"
    write_label(gt / "bonn_000000_000019_gtFine_labelIds.png", [7, 9, 40])  # raw ids, all map validly
    gt.mkdir(parents=True, exist_ok=True)
    problems = check_dataset(f"cityscapes:{tmp_path}:val")
    assert len(problems) == 1 and "bonn_000001_000019_leftImg8bit.png: image without a label" in problems[0]
    # the label it expects is named as the official download names it (only labelIds there)
    assert "bonn_000001_000019_gtFine_labelIds.png" in problems[0] and "TrainIds" not in problems[0]


def test_empty_and_unresolvable_specs(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    assert check_dataset(f"folder:{tmp_path}") == [f"{tmp_path}: no images found"]
    with pytest.raises(FisherTuneError, match="folder not found"):
        check_dataset(f"folder:{tmp_path / 'absent'}")
