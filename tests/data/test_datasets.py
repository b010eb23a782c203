"""Dataset loaders on fabricated trees that copy each official layout exactly; folder errors; specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.io import savemat

from fishertune.data.datasets import DATASETS, FolderDataset, build_dataset
from fishertune.data.labels import CLASS_NAMES, ID_TO_TRAINID, PALETTE, colorize, ids_to_train_ids
from fishertune.errors import FisherTuneError


def _labels(dataset):
    return {item["name"]: sorted(set(item["label"].unique().tolist())) for item in dataset}


def test_label_space_matches_cityscapes():
    assert CLASS_NAMES[0] == "road" and CLASS_NAMES[13] == "car" and CLASS_NAMES[18] == "bicycle"
    assert len(CLASS_NAMES) == 19 and PALETTE.shape == (19, 3)
    assert tuple(PALETTE[0]) == (128, 64, 128)
    # label ids 7 road, 8 sidewalk, 26 car, 33 bicycle; 9 parking and 0 unlabeled are ignored
    assert ids_to_train_ids(np.array([7, 8, 26, 33, 9, 0])).tolist() == [0, 1, 13, 18, 255, 255]
    assert (ID_TO_TRAINID[34:] == 255).all()
    assert colorize(np.array([[0, 255]])).tolist() == [[[128, 64, 128], [0, 0, 0]]]


def test_folder_dataset_items_follow_the_contract(tmp_path, fabricate):
    write_image, write_label = fabricate
    write_image(tmp_path / "my_set" / "images" / "a.png", value=255)
    write_label(tmp_path / "my_set" / "labels" / "a.png", [0, 18, 255])
    dataset = build_dataset(f"folder:{tmp_path / 'my_set'}")
    assert dataset.name == "my_set" and len(dataset) == 1
    item = dataset[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 6, 8)
    assert torch.allclose(item["image"], torch.ones(3, 6, 8))
    assert item["label"].dtype == torch.int64 and item["label"].shape == (6, 8)
    assert sorted(item["label"].unique().tolist()) == [0, 18, 255]
    assert item["name"] == "a"


def test_folder_dataset_errors_name_the_problem(tmp_path, fabricate):
    write_image, write_label = fabricate
    with pytest.raises(FisherTuneError, match="folder not found: .*images"):
        FolderDataset(tmp_path / "nothing")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    with pytest.raises(FisherTuneError, match="no image/label pairs found in .*empty"):
        FolderDataset(tmp_path / "empty")
    write_image(tmp_path / "d" / "images" / "x.png")
    (tmp_path / "d" / "labels").mkdir()
    with pytest.raises(FisherTuneError, match=r"image .*x\.png has no label .*x\.png"):
        FolderDataset(tmp_path / "d")
    write_label(tmp_path / "d" / "labels" / "x.png", [1])
    write_label(tmp_path / "d" / "labels" / "y.png", [1])
    with pytest.raises(FisherTuneError, match=r"label .*y\.png has no image"):
        FolderDataset(tmp_path / "d")
    (tmp_path / "d" / "labels" / "y.png").unlink()
    (tmp_path / "d" / "images" / "x.png").write_bytes(b"not a png")
    dataset = FolderDataset(tmp_path / "d")
    with pytest.raises(FisherTuneError, match=r"cannot read image .*x\.png"):
        dataset[0]
    write_image(tmp_path / "d" / "images" / "x.png", 5, 5)
    with pytest.raises(FisherTuneError, match=r"label .*x\.png is 8x6 but its image is 5x5"):
        dataset[0]
    write_image(tmp_path / "d" / "images" / "x.png")
    write_label(tmp_path / "d" / "labels" / "x.png", [3, 19])
    with pytest.raises(FisherTuneError, match=r"x\.png holds values outside 0-18 and 255"):
        dataset[0]


def test_gtav_layout_maps_ids_prefers_train_id_files_and_reads_the_official_split(tmp_path, fabricate):
    write_image, write_label = fabricate
    for number in (1, 2, 3):
        write_image(tmp_path / "images" / f"{number:05d}.png")
    write_label(tmp_path / "labels" / "00001.png", [7, 26, 0], palette=True)  # label ids -> 0, 13, 255
    write_label(tmp_path / "labels" / "00002.png", [7], palette=True)
    write_label(tmp_path / "labels" / "00002_labelTrainIds.png", [5, 6])  # already train ids: preferred
    write_label(tmp_path / "labels" / "00003.png", [33, 24], palette=True)  # 18, 11
    everything = build_dataset(f"gtav:{tmp_path}")
    assert everything.name == "gtav"
    assert _labels(everything) == {"00001": [0, 13, 255], "00002": [5, 6], "00003": [11, 18]}
    savemat(tmp_path / "split.mat", {"trainIds": np.array([[1], [3]]), "valIds": np.array([[2]]),
                                     "testIds": np.zeros((0, 1))})
    train = build_dataset(f"gtav:{tmp_path}:train")
    assert [item["name"] for item in train] == ["00001", "00003"] and train.name == "gtav-train"
    assert [item["name"] for item in build_dataset(f"gtav:{tmp_path}:val")] == ["00002"]
    (tmp_path / "val.txt").write_text("00003.png\n")
    assert [item["name"] for item in build_dataset(f"gtav:{tmp_path}:val")] == ["00003"]
    (tmp_path / "labels" / "00003.png").unlink()
    # named as the official download names it (the converted train-id file is optional)
    with pytest.raises(FisherTuneError, match=r"00003\.png has no label .*labels/00003\.png"):
        build_dataset(f"gtav:{tmp_path}")


def _cityscapes(root, write_image, write_label, image_dir="leftImg8bit", image_suffix="_leftImg8bit.png"):
    write_image(root / image_dir / "val" / "frankfurt" / f"frankfurt_000000_000294{image_suffix}")
    write_image(root / image_dir / "val" / "lindau" / f"lindau_000001_000019{image_suffix}")
    write_image(root / image_dir / "train" / "aachen" / f"aachen_000000_000019{image_suffix}")
    gt = root / "gtFine"
    write_label(gt / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelTrainIds.png", [2, 10])
    write_label(gt / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png", [11, 23])
    write_label(gt / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_instanceIds.png", [99])
    write_label(gt / "val" / "lindau" / "lindau_000001_000019_gtFine_labelIds.png", [24, 4])  # 11, 255
    write_label(gt / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png", [1])


def test_cityscapes_layout_pairs_by_city_and_falls_back_to_label_ids(tmp_path, fabricate):
    _cityscapes(tmp_path, *fabricate)
    val = build_dataset(f"cityscapes:{tmp_path}")
    assert val.name == "cityscapes"
    assert _labels(val) == {"frankfurt_000000_000294": [2, 10], "lindau_000001_000019": [11, 255]}
    assert _labels(build_dataset(f"cityscapes:{tmp_path}:train")) == {"aachen_000000_000019": [1]}


def test_foggy_cityscapes_picks_the_fog_density(tmp_path, fabricate):
    write_image, write_label = fabricate
    _cityscapes(tmp_path, write_image, write_label, "leftImg8bit_foggy", "_leftImg8bit_foggy_beta_0.02.png")
    write_image(tmp_path / "leftImg8bit_foggy" / "val" / "frankfurt"
                / "frankfurt_000000_000294_leftImg8bit_foggy_beta_0.01.png")
    dense = build_dataset(f"foggy_cityscapes:{tmp_path}")
    assert len(dense) == 2 and _labels(dense)["frankfurt_000000_000294"] == [2, 10]
    light = build_dataset(f"foggy_cityscapes:{tmp_path}:val:0.01")
    assert len(light) == 1 and light.name == "foggy_cityscapes-0.01"


def test_bdd100k_current_and_older_layouts(tmp_path, fabricate):
    write_image, write_label = fabricate
    write_image(tmp_path / "new" / "images" / "10k" / "val" / "7d2f7975-e0c1c5a7.jpg", fmt="JPEG")
    write_label(tmp_path / "new" / "labels" / "sem_seg" / "masks" / "val" / "7d2f7975-e0c1c5a7.png", [0, 255])
    write_image(tmp_path / "new" / "images" / "10k" / "train" / "0a0a0b1a-7c39d841.jpg", fmt="JPEG")
    write_label(tmp_path / "new" / "labels" / "sem_seg" / "masks" / "train" / "0a0a0b1a-7c39d841.png", [3])
    assert _labels(build_dataset(f"bdd100k:{tmp_path / 'new'}")) == {"7d2f7975-e0c1c5a7": [0, 255]}
    assert _labels(build_dataset(f"bdd100k:{tmp_path / 'new'}:train")) == {"0a0a0b1a-7c39d841": [3]}
    write_image(tmp_path / "old" / "seg" / "images" / "val" / "a1.jpg", fmt="JPEG")
    write_label(tmp_path / "old" / "seg" / "labels" / "val" / "a1_train_id.png", [8, 9])
    assert _labels(build_dataset(f"bdd100k:{tmp_path / 'old'}:val")) == {"a1": [8, 9]}


@pytest.mark.parametrize("release", ["v1.2", "v2.0"])
def test_mapillary_maps_the_66_vistas_classes_to_19(tmp_path, fabricate, release):
    write_image, write_label = fabricate
    labels = tmp_path / "validation" / ("labels" if release == "v1.2" else "v1.2/labels")
    write_image(tmp_path / "validation" / "images" / "M2kh294N9c72sICO990Uew.jpg", fmt="JPEG")
    # road, lane marking, curb, bicyclist, car, bicycle, unlabeled(65), sky(27)
    write_label(labels / "M2kh294N9c72sICO990Uew.png", [13, 24, 2, 20, 55, 52, 65, 27], palette=True)
    dataset = build_dataset(f"mapillary:{tmp_path}:val")
    assert dataset.name == "mapillary"
    assert _labels(dataset) == {"M2kh294N9c72sICO990Uew": [0, 1, 10, 12, 13, 18, 255]}


def test_acdc_conditions_and_reference_folders(tmp_path, fabricate):
    write_image, write_label = fabricate
    for condition, seq, frame in (("night", "GOPR0351", "000159"), ("fog", "GOPR0475", "000247")):
        stem = f"{seq}_frame_{frame}"
        write_image(tmp_path / "rgb_anon" / condition / "val" / seq / f"{stem}_rgb_anon.png")
        write_label(tmp_path / "gt" / condition / "val" / seq / f"{stem}_gt_labelTrainIds.png",
                    [0 if condition == "night" else 8])
        write_image(tmp_path / "rgb_anon" / condition / "val_ref" / seq / f"{stem}_ref_rgb_anon.png")
    for condition in ("rain", "snow"):
        stem = "GP010122/GP010122_frame_000001"
        write_image(tmp_path / "rgb_anon" / condition / "val" / f"{stem}_rgb_anon.png")
        write_label(tmp_path / "gt" / condition / "val" / f"{stem}_gt_labelIds.png", [26])
    night = build_dataset(f"acdc:{tmp_path}:val:night")
    assert night.name == "acdc-night" and _labels(night) == {"GOPR0351_frame_000159": [0]}
    everything = build_dataset(f"acdc:{tmp_path}")
    assert len(everything) == 4 and _labels(everything)["GP010122_frame_000001"] == [13]
    with pytest.raises(FisherTuneError, match="no option 'nihgt'.*did you mean 'night'"):
        build_dataset(f"acdc:{tmp_path}:val:nihgt")


def test_dark_zurich_and_foggy_zurich(tmp_path, fabricate):
    write_image, write_label = fabricate
    dz = tmp_path / "dz"
    write_image(dz / "rgb_anon" / "val" / "night" / "GOPR0356" / "GOPR0356_frame_000321_rgb_anon.png")
    write_label(dz / "gt" / "val" / "night" / "GOPR0356" / "GOPR0356_frame_000321_gt_labelTrainIds.png", [5])
    assert _labels(build_dataset(f"dark_zurich:{dz}")) == {"GOPR0356_frame_000321": [5]}
    fz = tmp_path / "Foggy_Zurich"
    write_image(fz / "RGB" / "GP010229" / "1508040913.0_frame_000955.png")
    write_image(fz / "RGB" / "GP010229" / "1508040913.0_frame_000999.png")  # unlisted: not read
    write_label(fz / "gt_labelTrainIds" / "GP010229" / "1508040913.0_frame_000955.png", [7])
    (fz / "lists_file_names").mkdir()
    listing = fz / "lists_file_names" / "RGB_testv2_filenames.txt"
    listing.write_text("RGB/GP010229/1508040913.0_frame_000955.png\n")
    assert _labels(build_dataset(f"foggy_zurich:{fz}")) == {"1508040913.0_frame_000955": [7]}


def test_spec_errors_are_one_line_with_the_nearest_name(tmp_path):
    with pytest.raises(FisherTuneError, match="did you mean 'cityscapes'"):
        build_dataset(f"cityscape:{tmp_path}")
    with pytest.raises(FisherTuneError, match="expected folder:PATH"):
        build_dataset("just_a_path")
    with pytest.raises(FisherTuneError, match="no split 'vall'.*did you mean 'val'"):
        build_dataset(f"cityscapes:{tmp_path}:vall")
    with pytest.raises(FisherTuneError, match="folder not found: .*missing"):
        build_dataset(f"cityscapes:{tmp_path / 'missing'}")
    with pytest.raises(FisherTuneError, match="folder not found: .*leftImg8bit"):
        build_dataset(f"cityscapes:{tmp_path}")
    assert {"gtav", "cityscapes", "bdd100k", "mapillary", "acdc", "dark_zurich"} <= set(DATASETS)
