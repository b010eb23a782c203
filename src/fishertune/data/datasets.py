"""Segmentation datasets: a plain image/label folder and the official layouts of the DGSS benchmarks.

Every dataset yields the items of CONTRACTS.md: ``{"image": float32 [3,H,W] RGB in [0,1], "label": int64
[H,W] Cityscapes train ids with 255 = ignore, "name": str}``. Raw label ids (Cityscapes label ids, Mapillary
Vistas v1.2 ids) are mapped to train ids while loading, through a 256-entry lookup table.

``build_dataset(spec)`` takes ``folder:PATH`` or ``<dataset>:ROOT[:split[:option]]``; the registry
``DATASETS`` lists the names with their layouts (see each loader's docstring for the official source).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fishertune.data.image_io import read_image, read_label
from fishertune.data.labels import ID_TO_TRAINID, IGNORE_INDEX, NUM_CLASSES
from fishertune.errors import FisherTuneError

Transform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""``transform(image [3,H,W] float, label [H,W] int64, generator) -> (image, label)``."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Pair:
    """One image file and its label file; ``label_lut`` maps stored label values to train ids (None: the
    file already holds train ids). ``label`` may not exist: ``check_dataset`` reports it, a dataset
    refuses it."""

    image: Path
    label: Path
    label_lut: np.ndarray | None = None


@dataclass(frozen=True)
class DatasetFiles:
    """What a spec resolves to: display name, root, the pairs, and label files that have no image
    (found for folder specs, whose label folder holds nothing else)."""

    name: str
    root: Path
    pairs: list[Pair]
    labels_without_images: list[Path]


class SegmentationDataset(Dataset):
    """Image/label pairs -> CONTRACTS items, with an optional seeded transform.

    The transform of item ``i`` in epoch ``e`` draws from a generator seeded by ``(seed, e, i)``, so the
    augmentation of an item does not depend on the order of loading, the number of workers or a resume.
    Call ``set_epoch`` each epoch to get fresh augmentations.
    """

    def __init__(self, pairs: list[Pair], name: str, root: str | Path, transform: Transform | None = None,
                 seed: int = 0):
        if not pairs:
            raise FisherTuneError(f"no image/label pairs found in {root}")
        for pair in pairs:
            if not pair.label.is_file():
                raise FisherTuneError(f"image {pair.image} has no label {pair.label}")
        self.pairs = pairs
        self.name = name
        self.root = Path(root)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image [H,W,3] uint8, label [H,W] uint8 train ids) of one pair, checked for size and values."""
        pair = self.pairs[index]
        image = read_image(pair.image)
        label = read_label(pair.label)
        if pair.label_lut is not None:
            label = pair.label_lut[label.clip(0, len(pair.label_lut) - 1)]
        if label.shape != image.shape[:2]:
            raise FisherTuneError(f"label {pair.label} is {label.shape[1]}x{label.shape[0]} but its image is "
                                  f"{image.shape[1]}x{image.shape[0]}")
        if ((label >= NUM_CLASSES) & (label != IGNORE_INDEX)).any() or (label < 0).any():
            raise FisherTuneError(f"label {pair.label} holds values outside 0-18 and 255 "
                                  f"(run `fishertune data check` to list every bad file)")
        return image, label.astype(np.uint8)

    def __getitem__(self, index: int) -> dict:
        image_array, label_array = self.load_arrays(index)
        image = torch.from_numpy(image_array).permute(2, 0, 1).float().div_(255.0)
        label = torch.from_numpy(label_array).long()
        if self.transform is not None:
            seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
            image, label = self.transform(image, label, torch.Generator().manual_seed(int(seed)))
        return {"image": image, "label": label, "name": _item_name(self.pairs[index].image)}


def _item_name(image: Path) -> str:
    """The image file's stem without the dataset's image suffix (``_leftImg8bit[_foggy_beta_*]``,
    ``_rgb_anon``)."""
    return image.stem.split("_leftImg8bit")[0].removesuffix("_rgb_anon")


def _require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise FisherTuneError(f"folder not found: {path}")
    return path


def _images_in(folder: Path, pattern: str = "*") -> list[Path]:
    """Image files (png/jpg) matching a glob pattern under a folder, sorted."""
    return sorted(p for p in _require_dir(folder).glob(pattern)
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _find_label(image: Path, candidates: list[tuple[Path, np.ndarray | None]]) -> Pair:
    """The first existing label among (path, lut) candidates, train-id files first; the first candidate
    when none exists (a missing pair, reported later)."""
    for label, lut in candidates:
        if label.is_file():
            return Pair(image, label, lut)
    return Pair(image, *candidates[0])


# --------------------------------------------------------------------------------------------- folder


def folder_files(root: str | Path) -> DatasetFiles:
    """``ROOT/images/<id>.(png|jpg)`` with ``ROOT/labels/<id>.png`` holding train ids (the synth layout);
    the display name is the folder's name."""
    root = Path(root)
    images = _images_in(root / "images")
    labels_dir = _require_dir(root / "labels")
    pairs = [_find_label(image, [(labels_dir / f"{image.stem}.png", None)]) for image in images]
    image_stems = {image.stem for image in images}
    orphans = [label for label in sorted(labels_dir.glob("*.png")) if label.stem not in image_stems]
    return DatasetFiles(root.resolve().name, root, pairs, orphans)


class FolderDataset(SegmentationDataset):
    """A folder in the synth layout. A label without an image is refused as firmly as an image without a
    label: either means the folder is not what the user thinks it is."""

    def __init__(self, root: str | Path, transform: Transform | None = None, seed: int = 0):
        files = folder_files(root)
        if files.labels_without_images:
            orphan = files.labels_without_images[0]
            raise FisherTuneError(f"label {orphan} has no image in {files.root / 'images'}")
        super().__init__(files.pairs, files.name, files.root, transform, seed)


# ------------------------------------------------------------------------------- official datasets


@dataclass(frozen=True)
class DatasetLayout:
    """A registered dataset family: ``pairs(root, split, option)`` and what the spec fields mean."""

    pairs: Callable[[Path, str, str | None], list[Pair]]
    default_split: str
    splits: tuple[str, ...]
    options: tuple[str, ...] | None
    description: str


DATASETS: dict[str, DatasetLayout] = {}


def register(name: str, default_split: str, splits: tuple[str, ...], description: str,
             options: tuple[str, ...] | None = None):
    def decorate(function):
        DATASETS[name] = DatasetLayout(function, default_split, splits, options, description)
        return function

    return decorate


@register("gtav", "all", ("all", "train", "val", "test"), "GTAV (Playing for Data): images/, labels/")
def gtav_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """GTAV, Richter et al. 2016 (download.visinf.tu-darmstadt.de/data/from_games): ``images/00001.png``
    and ``labels/00001.png`` (palette PNGs whose indices are Cityscapes label ids). A label converted to
    train ids by mmsegmentation's ``tools/dataset_converters/gta.py`` (``labels/00001_labelTrainIds.png``,
    as Rein and other DGSS configs read it) is used in preference.

    Splits: ``all`` (every image, the DGSS source protocol), or ``train``/``val``/``test`` from the
    official ``split.mat`` (arrays ``trainIds``, ``valIds``, ``testIds`` of 1-based frame numbers) or a
    ``<split>.txt`` file listing one image name or frame number per line.
    """
    images = _images_in(root / "images", "*.png")
    _require_dir(root / "labels")
    if split != "all":
        wanted = _gtav_split_stems(root, split)
        images = [image for image in images if image.stem in wanted]
    return [_find_label(image, [(root / "labels" / f"{image.stem}_labelTrainIds.png", None),
                                   (root / "labels" / f"{image.stem}.png", ID_TO_TRAINID)])
            for image in images]


def _gtav_split_stems(root: Path, split: str) -> set[str]:
    text_file, mat_file = root / f"{split}.txt", root / "split.mat"
    if text_file.is_file():
        entries = [line.strip() for line in text_file.read_text().splitlines() if line.strip()]
        return {Path(entry).stem if not entry.isdigit() else f"{int(entry):05d}" for entry in entries}
    if mat_file.is_file():
        from scipy.io import loadmat

        ids = loadmat(mat_file).get(f"{split}Ids")
        if ids is None:
            raise FisherTuneError(f"{mat_file} has no array {split}Ids")
        return {f"{int(number):05d}" for number in np.asarray(ids).ravel()}
    raise FisherTuneError(f"GTAV split '{split}' needs {mat_file} or {text_file}")


def _cityscapes_label(gt_dir: Path, image: Path, image_suffix: str) -> Pair:
    stem = image.name.removesuffix(image_suffix)
    folder = gt_dir / image.parent.name
    return _find_label(image, [(folder / f"{stem}_gtFine_labelTrainIds.png", None),
                                  (folder / f"{stem}_gtFine_labelIds.png", ID_TO_TRAINID)])


@register("cityscapes", "val", ("train", "val", "test"), "Cityscapes: leftImg8bit/<split>/<city>/, gtFine/")
def cityscapes_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Cityscapes, Cordts et al. 2016 (cityscapes-dataset.com): ``leftImg8bit/<split>/<city>/<city>_<seq>_
    <frame>_leftImg8bit.png`` with ``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png``
    (made by cityscapesscripts' ``createTrainIdLabelImgs``), else ``..._gtFine_labelIds.png`` mapped
    through the label table."""
    images = _images_in(root / "leftImg8bit" / split, "*/*_leftImg8bit.png")
    gt_dir = _require_dir(root / "gtFine" / split)
    return [_cityscapes_label(gt_dir, image, "_leftImg8bit.png") for image in images]


@register("foggy_cityscapes", "val", ("train", "val", "test"),
          "Foggy Cityscapes: leftImg8bit_foggy/<split>/<city>/ (option: beta 0.005|0.01|0.02)",
          options=("0.005", "0.01", "0.02"))
def foggy_cityscapes_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Foggy Cityscapes, Sakaridis et al. 2018: ``leftImg8bit_foggy/<split>/<city>/<stem>_leftImg8bit_foggy_
    beta_<beta>.png`` with the Cityscapes ``gtFine`` labels; the option picks the fog density beta
    (default 0.02, the densest, as usually reported)."""
    suffix = f"_leftImg8bit_foggy_beta_{option or '0.02'}.png"
    images = _images_in(root / "leftImg8bit_foggy" / split, f"*/*{suffix}")
    gt_dir = _require_dir(root / "gtFine" / split)
    return [_cityscapes_label(gt_dir, image, suffix) for image in images]


@register("bdd100k", "val", ("train", "val"),
          "BDD100K seg: images/10k/<split>/, labels/sem_seg/masks/<split>/")
def bdd100k_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """BDD100K semantic segmentation, Yu et al. 2020 (doc.bdd100k.com): ``images/10k/<split>/<name>.jpg``
    with ``labels/sem_seg/masks/<split>/<name>.png`` (train ids). The older release's layout
    ``seg/images/<split>/<name>.jpg`` with ``seg/labels/<split>/<name>_train_id.png`` is read too."""
    if (root / "images" / "10k").is_dir():
        labels = _require_dir(root / "labels" / "sem_seg" / "masks" / split)
        return [_find_label(image, [(labels / f"{image.stem}.png", None)])
                for image in _images_in(root / "images" / "10k" / split)]
    if (root / "seg").is_dir():
        labels = _require_dir(root / "seg" / "labels" / split)
        return [_find_label(image, [(labels / f"{image.stem}_train_id.png", None)])
                for image in _images_in(root / "seg" / "images" / split)]
    raise FisherTuneError(f"folder not found: {root / 'images' / '10k'} (nor the older {root / 'seg'})")


MAPILLARY_TO_TRAINID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
"""Mapillary Vistas v1.2 (66 classes) -> Cityscapes train ids, the mapping used by DGSS/UDA code
(DAFormer/HRDA ``tools/convert_datasets/mapillary.py``; tue-mps/benchmark-vfm-ss ``get_mapillary_mapping``):
road <- road, lane marking, manhole; sidewalk <- curb, sidewalk; rider <- bicyclist, motorcyclist, other
rider; everything else unmatched -> 255."""
for _ids, _train_id in (((13, 24, 41), 0), ((2, 15), 1), ((17,), 2), ((6,), 3), ((3,), 4), ((45, 47), 5),
                        ((48,), 6), ((50,), 7), ((30,), 8), ((29,), 9), ((27,), 10), ((19,), 11),
                        ((20, 21, 22), 12), ((55,), 13), ((61,), 14), ((54,), 15), ((58,), 16), ((57,), 17),
                        ((52,), 18)):
    MAPILLARY_TO_TRAINID[list(_ids)] = _train_id


@register("mapillary", "validation", ("training", "validation"),
          "Mapillary Vistas v1.2: <split>/images/*.jpg, <split>/labels/*.png (66 ids mapped to 19)")
def mapillary_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """Mapillary Vistas, Neuhold et al. 2017 (mapillary.com/dataset/vistas): ``<split>/images/<key>.jpg``
    with the v1.2 palette labels ``<split>/labels/<key>.png`` (v1.2 release) or ``<split>/v1.2/labels/``
    (v2.0 release), mapped 66 -> 19 by ``MAPILLARY_TO_TRAINID``. The spec accepts ``train``/``val`` for
    ``training``/``validation``."""
    labels = root / split / "v1.2" / "labels"
    labels = labels if labels.is_dir() else _require_dir(root / split / "labels")
    return [_find_label(image, [(labels / f"{image.stem}.png", MAPILLARY_TO_TRAINID)])
            for image in _images_in(root / split / "images", "*.jpg")]


ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


def _anon_pairs(image_dir: Path, gt_dir: Path) -> list[Pair]:
    """``<seq>/<seq>_frame_<n>_rgb_anon.png`` with ``<seq>/<seq>_frame_<n>_gt_labelTrainIds.png`` (else
    ``_gt_labelIds.png`` mapped), the layout shared by ACDC and Dark Zurich."""
    _require_dir(gt_dir)
    pairs = []
    for image in _images_in(image_dir, "*/*_rgb_anon.png"):
        stem = image.name.removesuffix("_rgb_anon.png")
        folder = gt_dir / image.parent.name
        pairs.append(_find_label(image, [(folder / f"{stem}_gt_labelTrainIds.png", None),
                                            (folder / f"{stem}_gt_labelIds.png", ID_TO_TRAINID)]))
    return pairs


@register("acdc", "val", ("train", "val"),
          "ACDC: rgb_anon/<condition>/<split>/<seq>/, gt/... (option: fog|night|rain|snow, default all)",
          options=ACDC_CONDITIONS)
def acdc_pairs(root: Path, split: str, option: str | None) -> list[Pair]:
    """ACDC, Sakaridis et al. 2021 (acdc.vision.ee.ethz.ch): ``rgb_anon/<condition>/<split>/<seq>/
    <seq>_frame_<n>_rgb_anon.png`` with ``gt/<condition>/<split>/<seq>/<seq>_frame_<n>_gt_labelTrainIds.png``.
    The option picks one condition (``acdc:ROOT:val:night``); without it all four are read. The
    ``<split>_ref`` folders (clear reference images, unlabelled) are never read."""
    conditions = (option,) if option else ACDC_CONDITIONS
    return [pair for condition in conditions
            for pair in _anon_pairs(root / "rgb_anon" / condition / split, root / "gt" / condition / split)]


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
    for line in listing.read_text().splitlines():
        relative = Path(line.strip())
        if not line.strip():
            continue
        image = root / relative
        if not image.is_file():
            raise FisherTuneError(f"image {image} listed in {listing} does not exist")
        tail = Path(*relative.parts[1:])
        pairs.append(_find_label(image, [(root / "gt_labelTrainIds" / tail, None),
                                            (root / "gt_labelIds" / tail, ID_TO_TRAINID)]))
    return pairs


# -------------------------------------------------------------------------------------------- specs


def _nearest(name: str, options) -> str:
    match = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid: {', '.join(options)})"


def resolve_spec(spec: str) -> DatasetFiles:
    """Parse ``folder:PATH`` or ``<dataset>:ROOT[:split[:option]]`` and find its files.

    The display name is the folder's name for a folder spec, else the dataset name, with the option
    appended (``acdc-night``) and the split when it is not the default (``cityscapes-train``).
    """
    name, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise FisherTuneError(f"bad dataset spec '{spec}': expected folder:PATH or <dataset>:ROOT[:split]")
    if name == "folder":
        return folder_files(rest)
    if name not in DATASETS:
        raise FisherTuneError(f"unknown dataset '{name}'" + _nearest(name, ["folder", *DATASETS]))
    layout = DATASETS[name]
    fields = rest.split(":")
    if len(fields) > 3:
        raise FisherTuneError(f"bad dataset spec '{spec}': at most ROOT:split:option after the name")
    root = Path(fields[0])
    split = fields[1] if len(fields) > 1 and fields[1] else layout.default_split
    option = fields[2] if len(fields) > 2 and fields[2] else None
    if name == "mapillary":
        split = {"train": "training", "val": "validation"}.get(split, split)
    if split not in layout.splits:
        raise FisherTuneError(f"{name} has no split '{split}'" + _nearest(split, layout.splits))
    if option is not None and (layout.options is None or option not in layout.options):
        valid = layout.options or ()
        raise FisherTuneError(f"{name} has no option '{option}'" + (_nearest(option, valid) if valid else ""))
    _require_dir(root)
    shown_split = None if split == layout.default_split else split
    display = "-".join(part for part in (name, shown_split, option) if part)
    return DatasetFiles(display, root, layout.pairs(root, split, option), [])


def build_dataset(spec: str, transform: Transform | None = None, seed: int = 0) -> SegmentationDataset:
    """A dataset from a spec: ``folder:PATH`` or ``<dataset>:ROOT[:split[:option]]``.

    Examples: ``folder:synth/fog``, ``cityscapes:/data/cityscapes:val``, ``acdc:/data/acdc:val:night``,
    ``gtav:/data/gta`` (all images), ``mapillary:/data/vistas:validation``.
    """
    if spec.startswith("folder:"):
        return FolderDataset(spec.removeprefix("folder:"), transform, seed)
    files = resolve_spec(spec)
    return SegmentationDataset(files.pairs, files.name, files.root, transform, seed)
