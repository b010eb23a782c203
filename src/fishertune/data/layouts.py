"""The official folder layouts of the DGSS datasets: where each image's label is and how it is encoded.

A layout turns ``(root, split, option)`` into ``Pair``s (image file, label file, the lookup table that maps
the stored values to Cityscapes train ids). Every layout is registered in ``DATASETS`` with its splits and
options; docs/datasets.md shows each folder tree as downloaded. Nothing here reads pixels except the
16-bit SYNTHIA label reader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import png
from tqdm import tqdm

from fishertune.data.image_io import read_label
from fishertune.data.labels import (
    CLASS_SUBSETS,
    ID_TO_TRAINID,
    MAPILLARY_TABLES,
    SYNTHIA_TO_TRAINID,
    subset_table,
)
from fishertune.errors import FisherTuneError
from fishertune.registry import Registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PROGRESS_FROM = 2000
"""Listing more files than this shows a progress bar (on a terminal)."""

TRAIN_IDS = "train ids"
CITYSCAPES_IDS = "Cityscapes label ids (cityscapesscripts)"


@dataclass(frozen=True)
class Pair:
    """One image and its label.

    ``label`` is None for an unlabelled split (ACDC test). ``label_lut`` maps the stored values to train
    ids (None: the file holds train ids); ``table`` names that mapping; ``reader`` reads the label file;
    ``resize_to_label`` allows an image whose size differs from its label's (GTAV) to be resized to it.
    """

    image: Path
    label: Path | None
    label_lut: np.ndarray | None = field(default=None, compare=False)
    table: str = TRAIN_IDS
    reader: Callable[[Path], np.ndarray] = field(default=read_label, compare=False)
    resize_to_label: bool = False


@dataclass(frozen=True)
class DatasetLayout:
    """A registered dataset: ``pairs(root, split, option)`` and what the spec fields may be.

    ``default_option`` is written into canonical specs (so a config records e.g. which Mapillary table it
    used); ``unlabelled_splits`` can be predicted on but not evaluated or trained on; ``missing_labels``
    says how an image without its label file is treated: ``"error"``, or ``"skip"`` (with one warning);
    ``split_aliases`` maps other names users write for a split to the split (Mapillary: train, val).
    """

    pairs: Callable[[Path, str, str | None], list[Pair]]
    default_split: str
    splits: tuple[str, ...]
    description: str
    options: tuple[str, ...] = ()
    default_option: str | None = None
    unlabelled_splits: tuple[str, ...] = ()
    missing_labels: str = "error"
    split_aliases: Mapping[str, str] = field(default_factory=dict)


DATASETS: Registry[DatasetLayout] = Registry("dataset")


def register(name: str, default_split: str, splits: tuple[str, ...], description: str, **facts):
    """Register a layout function under ``name`` (see ``DatasetLayout`` for ``facts``)."""
    def decorate(function):
        DATASETS.register(DatasetLayout(function, default_split, splits, description, **facts), name)
        return function

    return decorate


# ------------------------------------------------------------------------------------------- helpers


def require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise FisherTuneError(f"folder not found: {path}")
    return path


def images_in(folder: Path, pattern: str = "*") -> list[Path]:
    """Image files (png/jpg) matching a glob pattern under a folder, sorted."""
    return sorted(p for p in require_dir(folder).glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)


def progress(items: list, desc: str) -> Iterable:
    """``items``, with a progress bar on a terminal when there are many."""
    hidden = len(items) <= PROGRESS_FROM
    return tqdm(items, desc=desc, unit="file", leave=False, disable=True if hidden else None)


def find_label(image: Path, candidates: list[tuple[Path, np.ndarray | None, str]], **pair) -> Pair:
    """The first existing label among (path, lut, table) candidates, converted train-id files first; when
    none exists, the last one, the dataset's official name (e.g. Cityscapes' ``_gtFine_labelIds.png``):
    a missing label is reported by the dataset or by ``data check`` under the name its download has."""
    for label, lut, table in candidates:
        if label.is_file():
            return Pair(image, label, lut, table, **pair)
    label, lut, table = candidates[-1]
    return Pair(image, label, lut, table, **pair)


def _train_id_or_ids(folder: Path, stem: str, train_suffix: str, id_suffix: str) -> list:
    return [(folder / f"{stem}{train_suffix}", None, TRAIN_IDS),
            (folder / f"{stem}{id_suffix}", ID_TO_TRAINID, CITYSCAPES_IDS)]


# -------------------------------------------------------------------------------------------- folder


def folder_pairs(root: Path) -> tuple[list[Pair], list[Path]]:
    """``ROOT/images/<id>.(png|jpg)`` with ``ROOT/labels/<id>.png`` holding train ids (the synth layout),
    and the label files that have no image."""
    images = images_in(root / "images")
    labels_dir = require_dir(root / "labels")
    pairs = [Pair(image, labels_dir / f"{image.stem}.png") for image in images]
    stems = {image.stem for image in images}
    orphans = [label for label in sorted(labels_dir.glob("*.png")) if label.stem not in stems]
    return pairs, orphans


# --------------------------------------------------------------------------------------------- GTAV


@register("gtav", "all", ("all", "train", "val", "test"),
          "GTAV (Playing for Data): images/, labels/ (all = the 24,966 images the DGSS papers train on)")
def gtav_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """GTAV, Richter et al. 2016 (download.visinf.tu-darmstadt.de/data/from_games): ``images/00001.png``
    and ``labels/00001.png`` (palette PNGs whose indices are Cityscapes label ids). A label converted to
    train ids by DAFormer's ``tools/convert_datasets/gta.py`` (``labels/00001_labelTrainIds.png``, as Rein
    and other DGSS configs read it) is used in preference.

    A few GTAV images differ in size from their label by a few pixels; such an image is resized to its
    label (``resize_to_label``), as mmseg-based pipelines do when they resize both to the training scale.

    Splits: ``all`` (every image, the DGSS source protocol), or ``train``/``val``/``test`` from the
    official ``split.mat`` (arrays ``trainIds``, ``valIds``, ``testIds`` of 1-based frame numbers) or a
    ``<split>.txt`` file listing one image name or frame number per line.
    """
    images = images_in(root / "images", "*.png")
    labels = require_dir(root / "labels")
    if split != "all":
        wanted = _gtav_split_stems(root, split)
        images = [image for image in images if image.stem in wanted]
    return [find_label(image, _train_id_or_ids(labels, image.stem, "_labelTrainIds.png", ".png"),
                       resize_to_label=True)
            for image in progress(images, "listing gtav")]


def _gtav_split_stems(root: Path, split: str) -> set[str]:
    text_file, mat_file = root / f"{split}.txt", root / "split.mat"
    if text_file.is_file():
        entries = [line.strip() for line in text_file.read_text().splitlines() if line.strip()]
        return {Path(entry).stem if not entry.isdigit() else f"{int(entry):05d}" for entry in entries}
    if mat_file.is_file():
        from scipy.io import loadmat  # heavy dependency (0.4 s), for the one layout that has a .mat split

        ids = loadmat(mat_file).get(f"{split}Ids")
        if ids is None:
            raise FisherTuneError(f"{mat_file} has no array {split}Ids")
        return {f"{int(number):05d}" for number in np.asarray(ids).ravel()}
    raise FisherTuneError(f"GTAV split '{split}' needs {mat_file} or {text_file}")


# ------------------------------------------------------------------------------------------ SYNTHIA


def read_synthia_label(path: Path) -> np.ndarray:
    """The class ids of a SYNTHIA ``GT/LABELS/*.png``: a 16-bit PNG whose first channel (R) holds the class
    and whose second the instance id. Pillow reduces 16-bit colour PNGs to 8 bits (the class ids would all
    read 0), so it is decoded with pypng. DAFormer's converter reads the same channel: OpenCV returns BGR,
    and its ``[:, :, -1]`` is R."""
    try:
        width, height, rows, info = png.Reader(filename=str(path)).read()
        array = np.vstack([np.asarray(row, dtype=np.int64) for row in rows])
    except (OSError, ValueError, png.Error) as error:
        raise FisherTuneError(f"cannot read label {path}: {error}") from None
    return array.reshape(height, width, info["planes"])[:, :, 0]


def _read_synthia_or_converted(path: Path) -> np.ndarray:
    return read_label(path) if path.name.endswith("_labelTrainIds.png") else read_synthia_label(path)


@register("synthia", "all", ("all",),
          "SYNTHIA-RAND-CITYSCAPES: RGB/, GT/LABELS/ (option: class set 19|16|13, default 19)",
          options=tuple(CLASS_SUBSETS), default_option="19")
def synthia_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """SYNTHIA-RAND-CITYSCAPES, Ros et al. 2016 (synthia-dataset.net): ``RGB/0000000.png`` with
    ``GT/LABELS/0000000.png`` (16-bit, class id in the first channel, see ``read_synthia_label``) mapped
    by ``SYNTHIA_TO_TRAINID``. DAFormer's converted ``GT/LABELS/0000000_labelTrainIds.png`` (8-bit train
    ids, much faster to read) is used where present. The option keeps the 19, 16 or 13 classes results on
    SYNTHIA are reported on; the other train ids become 255."""
    subset = option or "19"
    keep_all = subset_table(np.arange(256, dtype=np.uint8), subset)
    converted_lut = None if subset == "19" else keep_all
    suffix = "" if subset == "19" else f", {subset} classes"
    labels = require_dir(root / "GT" / "LABELS")
    return [find_label(image, [
        (labels / f"{image.stem}_labelTrainIds.png", converted_lut, TRAIN_IDS + suffix),
        (labels / image.name, subset_table(SYNTHIA_TO_TRAINID, subset), f"SYNTHIA ids (DAFormer){suffix}")],
        reader=_read_synthia_or_converted)
        for image in progress(images_in(root / "RGB", "*.png"), "listing synthia")]


# -------------------------------------------------------------------------------- Cityscapes family


def _cityscapes_like(images: list[Path], gt_dir: Path, image_suffix: str, gt: str = "gtFine") -> list[Pair]:
    pairs = []
    for image in images:
        stem = image.name.removesuffix(image_suffix)
        pairs.append(find_label(image, _train_id_or_ids(gt_dir / image.parent.name, stem,
                                                        f"_{gt}_labelTrainIds.png", f"_{gt}_labelIds.png")))
    return pairs


@register("cityscapes", "val", ("train", "val", "test"), "Cityscapes: leftImg8bit/<split>/<city>/, gtFine/",
          unlabelled_splits=("test",))
def cityscapes_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Cityscapes, Cordts et al. 2016 (cityscapes-dataset.com): ``leftImg8bit/<split>/<city>/<city>_<seq>_
    <frame>_leftImg8bit.png`` with ``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png``
    (made by cityscapesscripts' ``createTrainIdLabelImgs``), else ``..._gtFine_labelIds.png`` mapped
    through the label table. The ``test`` labels are withheld (predict only)."""
    images = images_in(root / "leftImg8bit" / split, "*/*_leftImg8bit.png")
    if split == "test":
        return [Pair(image, None) for image in images]
    return _cityscapes_like(images, require_dir(root / "gtFine" / split), "_leftImg8bit.png")


@register("foggy_cityscapes", "val", ("train", "val"),
          "Foggy Cityscapes: leftImg8bit_foggy/<split>/<city>/ (option: beta 0.005|0.01|0.02, default 0.02)",
          options=("0.005", "0.01", "0.02"), default_option="0.02")
def foggy_cityscapes_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Foggy Cityscapes, Sakaridis et al. 2018: ``leftImg8bit_foggy/<split>/<city>/<stem>_leftImg8bit_foggy_
    beta_<beta>.png`` with the Cityscapes ``gtFine`` labels; the option picks the fog density beta
    (default 0.02, the densest, as usually reported)."""
    suffix = f"_leftImg8bit_foggy_beta_{option or '0.02'}.png"
    images = images_in(root / "leftImg8bit_foggy" / split, f"*/*{suffix}")
    return _cityscapes_like(images, require_dir(root / "gtFine" / split), suffix)


FOGGY_DRIVING_SPLITS = {"test": "gtFine", "test_extra": "gtCoarse"}


@register("foggy_driving", "all", ("all", "test", "test_extra"),
          "Foggy Driving: leftImg8bit/<test|test_extra>/<record>/, gtFine/test/, gtCoarse/test_extra/")
def foggy_driving_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Foggy Driving, Sakaridis et al. 2018 (people.ee.ethz.ch/~csakarid/SFSU_synthetic):
    ``leftImg8bit/<split>/<record>/<record>_<id1>_<id2>_leftImg8bit.png`` (record: pedestrian, public, web)
    with ``gtFine/test/...`` (33 finely annotated images, split ``test``) or ``gtCoarse/test_extra/...``
    (68 coarsely annotated images, split ``test_extra``), ``_gt{Fine,Coarse}_labelTrainIds.png`` else
    ``_labelIds.png``. ``all`` = the 101 images, as the DGSS papers evaluate."""
    splits = FOGGY_DRIVING_SPLITS if split == "all" else {split: FOGGY_DRIVING_SPLITS[split]}
    pairs = []
    for part, gt in splits.items():
        images = images_in(root / "leftImg8bit" / part, "*/*_leftImg8bit.png")
        pairs += _cityscapes_like(images, require_dir(root / gt / part), "_leftImg8bit.png", gt)
    return pairs


@register("nighttime_driving", "test", ("test",),
          "Nighttime Driving: leftImg8bit/test/night/, gtCoarse_daytime_trainvaltest/test/night/")
def nighttime_driving_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Nighttime Driving test, Dai and Van Gool 2018 (``NighttimeDrivingTest.zip``): the 50 images
    ``leftImg8bit/test/night/<name>_leftImg8bit.png`` with coarse labels
    ``gtCoarse_daytime_trainvaltest/test/night/<name>_gtCoarse_labelTrainIds.png`` (else ``_labelIds``),
    the folders mmsegmentation's and DAFormer's ``NighttimeDrivingDataset`` read."""
    images = images_in(root / "leftImg8bit" / split, "*/*_leftImg8bit.png")
    gt_dir = require_dir(root / "gtCoarse_daytime_trainvaltest" / split)
    return _cityscapes_like(images, gt_dir, "_leftImg8bit.png", "gtCoarse")


# ------------------------------------------------------------------------------------------ BDD100K


@register("bdd100k", "val", ("train", "val"),
          "BDD100K seg: images/10k/<split>/, labels/sem_seg/masks/<split>/", missing_labels="skip")
def bdd100k_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """BDD100K semantic segmentation, Yu et al. 2020 (doc.bdd100k.com): ``images/10k/<split>/<name>.jpg``
    with ``labels/sem_seg/masks/<split>/<name>.png`` (train ids). The older release's layout
    ``seg/images/<split>/<name>.jpg`` with ``seg/labels/<split>/<name>_train_id.png`` is read too.
    The 10k image archive holds a few images that have no mask (4 in train, 2 in val); they are skipped."""
    if (root / "images" / "10k").is_dir():
        labels = require_dir(root / "labels" / "sem_seg" / "masks" / split)
        images = images_in(root / "images" / "10k" / split)
        return [Pair(image, labels / f"{image.stem}.png") for image in images]
    if (root / "seg").is_dir():
        labels = require_dir(root / "seg" / "labels" / split)
        return [Pair(image, labels / f"{image.stem}_train_id.png")
                for image in images_in(root / "seg" / "images" / split)]
    raise FisherTuneError(f"folder not found: {root / 'images' / '10k'} (nor the older {root / 'seg'})")


# ---------------------------------------------------------------------------------------- Mapillary


@register("mapillary", "validation", ("training", "validation"),
          "Mapillary Vistas v1.2: <split>/images/*.jpg, <split>/labels/*.png (66 ids mapped to 19; option: "
          "label table robustnet|rein, default robustnet)",
          options=tuple(MAPILLARY_TABLES), default_option="robustnet",
          split_aliases={"train": "training", "val": "validation"})
def mapillary_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Mapillary Vistas, Neuhold et al. 2017 (mapillary.com/dataset/vistas): ``<split>/images/<key>.jpg``
    with the v1.2 palette labels ``<split>/labels/<key>.png`` (v1.2 release) or ``<split>/v1.2/labels/``
    (v2.0 release), mapped 66 -> 19 by one of ``MAPILLARY_TABLES`` (the option; see docs/datasets.md).
    The spec accepts ``train``/``val`` for ``training``/``validation``."""
    name = option or "robustnet"
    labels = root / split / "v1.2" / "labels"
    labels = labels if labels.is_dir() else require_dir(root / split / "labels")
    table = f"Mapillary v1.2 -> 19 ({name})"
    return [Pair(image, labels / f"{image.stem}.png", MAPILLARY_TABLES[name], table)
            for image in progress(images_in(root / split / "images", "*.jpg"), "listing mapillary")]


# -------------------------------------------------------------------------------- ACDC, Dark Zurich

ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


def _anon_pairs(image_dir: Path, gt_dir: Path | None) -> list[Pair]:
    """``<seq>/<seq>_frame_<n>_rgb_anon.png`` with ``<seq>/<seq>_frame_<n>_gt_labelTrainIds.png`` (else
    ``_gt_labelIds.png`` mapped), the layout shared by ACDC and Dark Zurich; no labels when ``gt_dir`` is
    None."""
    images = images_in(image_dir, "*/*_rgb_anon.png")
    if gt_dir is None:
        return [Pair(image, None) for image in images]
    require_dir(gt_dir)
    return [find_label(image, _train_id_or_ids(gt_dir / image.parent.name,
                                               image.name.removesuffix("_rgb_anon.png"),
                                               "_gt_labelTrainIds.png", "_gt_labelIds.png"))
            for image in images]


@register("acdc", "val", ("train", "val", "test"),
          "ACDC: rgb_anon/<condition>/<split>/<seq>/, gt/... (option: fog|night|rain|snow, default all; "
          "test: images only, for predict)",
          options=ACDC_CONDITIONS, unlabelled_splits=("test",))
def acdc_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """ACDC, Sakaridis et al. 2021 (acdc.vision.ee.ethz.ch): ``rgb_anon/<condition>/<split>/<seq>/
    <seq>_frame_<n>_rgb_anon.png`` with ``gt/<condition>/<split>/<seq>/<seq>_frame_<n>_gt_labelTrainIds.png``.
    The option picks one condition (``acdc:ROOT:val:night``); without it all four are read. The ``test``
    labels are withheld: that split is for ``predict`` only. The ``<split>_ref`` folders (clear reference
    images, unlabelled) are never read."""
    conditions = (option,) if option else ACDC_CONDITIONS
    return [pair for condition in conditions
            for pair in _anon_pairs(root / "rgb_anon" / condition / split,
                                    None if split == "test" else root / "gt" / condition / split)]


@register("dark_zurich", "val", ("val",), "Dark Zurich: rgb_anon/val/night/<seq>/, gt/val/night/<seq>/")
def dark_zurich_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Dark Zurich, Sakaridis et al. 2019: ``rgb_anon/val/night/GOPR0356/GOPR0356_frame_<n>_rgb_anon.png``
    with ``gt/val/night/GOPR0356/..._gt_labelTrainIds.png`` (the 50 labelled night images; the test labels
    are withheld). mmsegmentation's ``DarkZurichDataset`` config reads the same folders."""
    return _anon_pairs(root / "rgb_anon" / split / "night", root / "gt" / split / "night")


@register("foggy_zurich", "test", ("test",),
          "Foggy Zurich: lists_file_names/RGB_testv2_filenames.txt, RGB/, gt_labelTrainIds/")
def foggy_zurich_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Foggy Zurich-test v2, Sakaridis et al. 2018: the 40 images named in
    ``lists_file_names/RGB_testv2_filenames.txt`` (lines ``RGB/<seq>/<name>.png``) with labels at the same
    relative path under ``gt_labelTrainIds/`` (else ``gt_labelIds/`` mapped)."""
    listing = root / "lists_file_names" / "RGB_testv2_filenames.txt"
    if not listing.is_file():
        raise FisherTuneError(f"file not found: {listing}")
    pairs = []
    for line in filter(None, (line.strip() for line in listing.read_text().splitlines())):
        image = root / line
        if Path(line).is_absolute() or not image.resolve().is_relative_to(root.resolve()):
            raise FisherTuneError(f"{listing} lists {line!r}, which is outside {root}")
        if not image.is_file():
            raise FisherTuneError(f"image {image} listed in {listing} does not exist")
        tail = Path(*Path(line).parts[1:])
        pairs.append(find_label(image, [(root / "gt_labelTrainIds" / tail, None, TRAIN_IDS),
                                        (root / "gt_labelIds" / tail, ID_TO_TRAINID, CITYSCAPES_IDS)]))
    return pairs
