"""The oddities of the real datasets, on fabricated trees in each official layout, with train-id histograms
checked against the official mapping tables (written out here independently of fishertune.data.labels)."""

from __future__ import annotations

import numpy as np
import png
import pytest
from cityscapesscripts.helpers.labels import labels as cityscapes_labels
from PIL import Image

from fishertune.data.check import inspect_dataset, split_counts
from fishertune.data.datasets import build_dataset, build_sources
from fishertune.errors import FisherTuneError

# DAFormer tools/convert_datasets/synthia.py, id_to_trainid
DAFORMER_SYNTHIA = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
                    8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
# RobustNet datasets/mapillary.py gen_id_to_ignore (= HRDA tools/convert_datasets/mapillary.py)
ROBUSTNET_MAPILLARY = {13: 0, 24: 0, 41: 0, 2: 1, 15: 1, 17: 2, 6: 3, 3: 4, 45: 5, 47: 5, 48: 6, 50: 7, 30: 8,
                       29: 9, 27: 10, 19: 11, 20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15, 58: 16, 57: 17,
                       52: 18}
# Mapillary Vistas v1.2 config.json, labels[i]["readable"]
VISTAS_READABLE = [
    "Bird", "Ground Animal", "Curb", "Fence", "Guard Rail", "Barrier", "Wall", "Bike Lane",
    "Crosswalk - Plain", "Curb Cut", "Parking", "Pedestrian Area", "Rail Track", "Road", "Service Lane",
    "Sidewalk", "Bridge", "Building", "Tunnel", "Person", "Bicyclist", "Motorcyclist", "Other Rider",
    "Lane Marking - Crosswalk", "Lane Marking - General", "Mountain", "Sand", "Sky", "Snow", "Terrain",
    "Vegetation", "Water", "Banner", "Bench", "Bike Rack", "Billboard", "Catch Basin", "CCTV Camera",
    "Fire Hydrant", "Junction Box", "Mailbox", "Manhole", "Phone Booth", "Pothole", "Street Light", "Pole",
    "Traffic Sign Frame", "Utility Pole", "Traffic Light", "Traffic Sign (Back)", "Traffic Sign (Front)",
    "Trash Can", "Bicycle", "Boat", "Bus", "Car", "Caravan", "Motorcycle", "On Rails", "Other Vehicle",
    "Trailer", "Truck", "Wheeled Slow", "Car Mount", "Ego Vehicle", "Unlabeled"]
CITYSCAPES_TRAIN_NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "trafficlight",
                          "trafficsign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                          "bus", "train", "motorcycle", "bicycle"]


def openseg_mapillary_table() -> dict[int, int]:
    """openseg.pytorch's mapillary2cityscape rule (as Rein ships it), applied to the readable names."""
    index = {name: i for i, name in enumerate(CITYSCAPES_TRAIN_NAMES)}
    table = {}
    for vistas_id, readable in enumerate(VISTAS_READABLE):
        name = readable.lower().replace(" ", "").replace("-", "")
        if name in index:
            table[vistas_id] = index[name]
        elif "trafficsign" in name or "front" in name or "back" in name:
            table[vistas_id] = index["trafficsign"]
        elif "onrail" in name:
            table[vistas_id] = index["train"]
        elif "cyclist" in name or "rider" in name:
            table[vistas_id] = index["rider"]
        elif "pole" in name or "streetlight" in name:
            table[vistas_id] = index["pole"]
        elif "curb" in name or "pedestrianarea" in name:
            table[vistas_id] = index["sidewalk"]
        elif any(k in name for k in ("crosswalkplain", "parking", "bikelane", "servicelane", "lanemarking")):
            table[vistas_id] = index["road"]
    return table


def expected_histogram(values: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Pixel count per train id (index 255 = ignore) of stored ``values`` mapped by ``table``."""
    histogram = np.zeros(256, np.int64)
    for value in values.ravel():
        histogram[table.get(int(value), 255)] += 1
    return histogram


def write_rgb(path, height=6, width=8, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path, format=fmt)


def write_ids(path, array, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array.astype(np.uint8), mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([c for i in range(256) for c in (i, 255 - i, (7 * i) % 256)])
        image.putdata(array.ravel().tolist())
    image.save(path)


# -------------------------------------------------------------------------------------------- GTAV


def test_gtav_image_of_another_size_is_resized_to_its_label_with_one_note(tmp_path, capsys):
    for number, size in ((1, (6, 8)), (2, (7, 9)), (3, (5, 8))):
        write_rgb(tmp_path / "images" / f"{number:05d}.png", *size)
        write_ids(tmp_path / "labels" / f"{number:05d}.png", np.full((6, 8), 26), palette=True)  # car
    dataset = build_dataset(f"gtav:{tmp_path}")
    items = [dataset[i] for i in range(3)] + [dataset[1], dataset[2]]
    assert all(item["image"].shape == (3, 6, 8) and (item["label"] == 13).all() for item in items)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: gtav: 2 image(s) differ in size"), err
    assert "00002.png" in err[0] and "00003.png" in err[0]
    report = inspect_dataset(f"gtav:{tmp_path}")
    assert report.problems == [] and len(report.notes) == 2 and report.verdict.startswith("OK")
    assert all("resized to the label" in line for line in report.notes)


def test_other_layouts_still_refuse_a_label_of_another_size(tmp_path):
    write_rgb(tmp_path / "images" / "a.png", 7, 9)
    write_ids(tmp_path / "labels" / "a.png", np.zeros((6, 8)))
    with pytest.raises(FisherTuneError, match="is 8x6 but its image is 9x7"):
        build_dataset(f"folder:{tmp_path}")[0]
    assert inspect_dataset(f"folder:{tmp_path}").verdict.startswith("FAIL")


def test_gtav_histogram_follows_cityscapesscripts(tmp_path):
    ids = np.arange(48).reshape(6, 8) % 36  # every Cityscapes label id 0..33 and two beyond
    write_rgb(tmp_path / "images" / "00001.png")
    write_ids(tmp_path / "labels" / "00001.png", ids, palette=True)
    table = {label.id: label.trainId for label in cityscapes_labels if 0 <= label.trainId < 255}
    histogram = inspect_dataset(f"gtav:{tmp_path}", histogram=True).histogram
    assert np.array_equal(histogram, expected_histogram(ids, table))


# ----------------------------------------------------------------------------------------- BDD100K


def test_bdd100k_images_without_a_mask_are_skipped_with_one_warning(tmp_path, capsys):
    names = ["7d128593-0ccfea4c", "7d15b18b-1e0d6e3f", "7d2f7975-e0c1c5a7", "7dc08598-f42e2015"]
    for name in names:
        write_rgb(tmp_path / "images" / "10k" / "val" / f"{name}.jpg", fmt="JPEG")
    for name in names[1:3]:
        write_ids(tmp_path / "labels" / "sem_seg" / "masks" / "val" / f"{name}.png", np.full((6, 8), 2))
    dataset = build_dataset(f"bdd100k:{tmp_path}")
    assert [dataset[i]["name"] for i in range(len(dataset))] == names[1:3]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"note: bdd100k: skipped 2 image(s) without a label: {names[0]}.jpg, {names[3]}.jpg"]
    report = inspect_dataset(f"bdd100k:{tmp_path}")
    assert report.problems == [] and len(report.notes) == 2 and report.labelled == 2
    assert all("image without a label" in line for line in report.notes)


# ----------------------------------------------------------------------------------------- SYNTHIA


def write_synthia_label(path, classes, instances):
    """GT/LABELS/*.png as SYNTHIA ships it: 16-bit RGB, class in the first channel, instance in the second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.stack([classes, instances, np.zeros_like(classes)], axis=-1).astype(np.uint16)
    with open(path, "wb") as file:
        png.Writer(classes.shape[1], classes.shape[0], bitdepth=16, greyscale=False).write(
            file, array.reshape(classes.shape[0], -1))


def test_synthia_reads_16_bit_labels_from_the_first_channel(tmp_path):
    classes = np.arange(48).reshape(6, 8) % 23  # every SYNTHIA class id 0..22
    instances = (np.arange(48).reshape(6, 8) * 517) % 65536  # large values: 16 bits matter
    write_rgb(tmp_path / "RGB" / "0000000.png")
    write_synthia_label(tmp_path / "GT" / "LABELS" / "0000000.png", classes, instances)
    dataset = build_dataset(f"synthia:{tmp_path}")
    assert dataset.name == "synthia" and dataset.label_table == "SYNTHIA ids (DAFormer)"
    expected = np.vectorize(lambda c: DAFORMER_SYNTHIA.get(int(c), 255))(classes)
    assert np.array_equal(dataset[0]["label"].numpy(), expected)
    histogram = inspect_dataset(f"synthia:{tmp_path}", histogram=True).histogram
    assert np.array_equal(histogram, expected_histogram(classes, DAFORMER_SYNTHIA))


@pytest.mark.parametrize(("subset", "dropped"), [("16", {9, 14, 16}), ("13", {3, 4, 5, 9, 14, 16})])
def test_synthia_class_subsets_and_converted_labels(tmp_path, subset, dropped):
    classes = np.arange(48).reshape(6, 8) % 23
    write_rgb(tmp_path / "RGB" / "0000000.png")
    write_rgb(tmp_path / "RGB" / "0000001.png")
    write_synthia_label(tmp_path / "GT" / "LABELS" / "0000000.png", classes, classes)
    write_synthia_label(tmp_path / "GT" / "LABELS" / "0000001.png", classes, classes)
    converted = np.arange(48).reshape(6, 8) % 20  # DAFormer's _labelTrainIds.png: preferred where present
    converted = np.where(converted == 19, 255, converted)
    write_ids(tmp_path / "GT" / "LABELS" / "0000001_labelTrainIds.png", converted)
    dataset = build_dataset(f"synthia:{tmp_path}:all:{subset}")
    assert dataset.name == f"synthia-{subset}"
    table = {k: v for k, v in DAFORMER_SYNTHIA.items() if v not in dropped}
    expected = np.vectorize(lambda c: table.get(int(c), 255))(classes)
    assert np.array_equal(dataset[0]["label"].numpy(), expected)
    kept = np.where(np.isin(converted, list(dropped)) | (converted == 19), 255, converted)
    assert np.array_equal(dataset[1]["label"].numpy(), kept)


# --------------------------------------------------------------------------------------- Mapillary


@pytest.mark.parametrize(("option", "table"), [(None, ROBUSTNET_MAPILLARY),
                                               ("robustnet", ROBUSTNET_MAPILLARY),
                                               ("rein", openseg_mapillary_table())])
def test_mapillary_label_tables(tmp_path, option, table):
    ids = np.arange(66 * 2).reshape(11, 12) % 66
    write_rgb(tmp_path / "validation" / "images" / "key.jpg", 11, 12, fmt="JPEG")
    write_ids(tmp_path / "validation" / "labels" / "key.png", ids, palette=True)
    spec = f"mapillary:{tmp_path}:validation" + (f":{option}" if option else "")
    report = inspect_dataset(spec, histogram=True)
    assert np.array_equal(report.histogram, expected_histogram(ids, table))
    assert report.label_table == f"Mapillary v1.2 -> 19 ({option or 'robustnet'})"
    assert build_dataset(spec).name == ("mapillary-rein" if option == "rein" else "mapillary")


def test_the_two_mapillary_tables_differ_where_the_issue_says():
    rein, robustnet = openseg_mapillary_table(), ROBUSTNET_MAPILLARY
    changed = {VISTAS_READABLE[i]: (robustnet.get(i, 255), rein.get(i, 255))
               for i in range(66) if rein.get(i, 255) != robustnet.get(i, 255)}
    assert changed == {"Bike Lane": (255, 0), "Crosswalk - Plain": (255, 0), "Parking": (255, 0),
                       "Service Lane": (255, 0), "Lane Marking - Crosswalk": (255, 0), "Manhole": (0, 255),
                       "Curb Cut": (255, 1), "Pedestrian Area": (255, 1), "Street Light": (255, 5),
                       "Traffic Sign Frame": (255, 7), "Traffic Sign (Back)": (255, 7)}


# -------------------------------------------------------------------- Foggy and Nighttime Driving


def test_foggy_driving_fine_and_coarse_splits(tmp_path):
    fine = [("pedestrian", "pedestrian_1_000001"), ("web", "web_0001_foggy")]
    coarse = [("public", "public_2_000123")]
    ids = np.arange(48).reshape(6, 8) % 34
    for record, stem in fine:
        write_rgb(tmp_path / "leftImg8bit" / "test" / record / f"{stem}_leftImg8bit.png")
        write_ids(tmp_path / "gtFine" / "test" / record / f"{stem}_gtFine_labelIds.png", ids)
    for record, stem in coarse:
        write_rgb(tmp_path / "leftImg8bit" / "test_extra" / record / f"{stem}_leftImg8bit.png")
        write_ids(tmp_path / "gtCoarse" / "test_extra" / record / f"{stem}_gtCoarse_labelTrainIds.png",
                  np.full((6, 8), 10))
    everything = build_dataset(f"foggy_driving:{tmp_path}")
    assert everything.name == "foggy_driving" and len(everything) == 3
    assert [item["name"] for item in build_dataset(f"foggy_driving:{tmp_path}:test")] == [s for _, s in fine]
    extra = build_dataset(f"foggy_driving:{tmp_path}:test_extra")
    assert extra.name == "foggy_driving-test_extra" and (extra[0]["label"] == 10).all()
    table = {label.id: label.trainId for label in cityscapes_labels if 0 <= label.trainId < 255}
    histogram = inspect_dataset(f"foggy_driving:{tmp_path}:test", histogram=True).histogram
    assert np.array_equal(histogram, 2 * expected_histogram(ids, table))
    assert split_counts(f"foggy_driving:{tmp_path}") == {"all": 3, "test": 2, "test_extra": 1}


def test_nighttime_driving_layout(tmp_path):
    for stem, train_id in (("0_frame_0130", 13), ("1_frame_0580", 0)):
        write_rgb(tmp_path / "leftImg8bit" / "test" / "night" / f"{stem}_leftImg8bit.png")
        write_ids(tmp_path / "gtCoarse_daytime_trainvaltest" / "test" / "night"
                  / f"{stem}_gtCoarse_labelTrainIds.png", np.full((6, 8), train_id))
    dataset = build_dataset(f"nighttime_driving:{tmp_path}")
    assert dataset.name == "nighttime_driving"
    labels = {item["name"]: int(item["label"][0, 0]) for item in dataset}
    assert labels == {"0_frame_0130": 13, "1_frame_0580": 0}


# --------------------------------------------------------------------------------------- ACDC test


def test_acdc_test_has_no_labels_and_is_for_predict_only(tmp_path):
    for condition in ("fog", "night", "rain", "snow"):
        write_rgb(tmp_path / "rgb_anon" / condition / "test" / "GOPR0477"
                  / f"GOPR0477_frame_00000{len(condition)}_rgb_anon.png")
    with pytest.raises(FisherTuneError, match=r"acdc split 'test' has no labels: .*fishertune predict"):
        build_dataset(f"acdc:{tmp_path}:test:fog")
    report = inspect_dataset(f"acdc:{tmp_path}:test")
    assert report.images == 4 and report.labelled == 0 and report.problems == []
    assert report.label_table == "none"


# ------------------------------------------------------------------------------------ multi-source


@pytest.mark.parametrize(("sampling", "expected"), [("proportional", {"big": 4, "small": 1}),
                                                    ("equal", {"big": 4, "small": 4})])
def test_several_sources_are_concatenated_with_documented_sampling(tmp_path, sampling, expected):
    for folder, n in (("big", 4), ("small", 1)):
        for i in range(n):
            write_rgb(tmp_path / folder / "images" / f"{folder}{i}.png")
            write_ids(tmp_path / folder / "labels" / f"{folder}{i}.png", np.full((6, 8), i))
    dataset = build_sources([f"folder:{tmp_path / 'big'}", f"folder:{tmp_path / 'small'}"], sampling)
    names = [dataset[i]["name"] for i in range(len(dataset))]
    assert dataset.name == "big+small"
    assert {folder: sum(name.startswith(folder) for name in names) for folder in ("big", "small")} == expected
    assert sorted(set(names)) == ["big0", "big1", "big2", "big3", "small0"]  # every image drawn
