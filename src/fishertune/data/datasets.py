"""Segmentation datasets: image/label pairs of one or several sources as training and evaluation items.

Every dataset yields ``{"image": float32 [3,H,W] RGB in [0,1], "label": int64 [H,W] Cityscapes train ids with
255 = ignore, "name": str}``. Stored label values (Cityscapes label ids, SYNTHIA or Mapillary ids) are mapped
to train ids while loading, through a 256-entry lookup table.

``build_dataset(spec)`` takes ``folder:PATH`` or ``<dataset>:ROOT[:split[:option]]`` (see
``fishertune.data.specs`` and the layouts registered in ``fishertune.data.layouts``; docs/datasets.md shows
each dataset as downloaded). ``build_sources(specs, sampling)`` concatenates several sources for training;
``hold_out(parts, holdout)`` keeps a slice of them out of training as source validation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fishertune.data.classes import CITYSCAPES, ClassSet
from fishertune.data.image_io import image_size, read_image
from fishertune.data.layouts import DATASETS, Pair, progress
from fishertune.data.specs import DatasetFiles, DatasetSpec, HoldOut, resolve_spec
from fishertune.errors import FisherTuneError

__all__ = ["DATASETS", "DatasetFiles", "DatasetSpec", "FolderDataset", "Pair", "SegmentationDataset",
           "build_dataset", "build_sources", "concatenate", "hold_out", "resolve_spec"]

Transform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""``transform(image [3,H,W] float, label [H,W] int64, generator) -> (image, label)``."""

Sampling = Literal["proportional", "equal"]
SHOWN_FILES = 3
"""How many files a one-line note names."""


def note(message: str) -> None:
    """One line on stderr for something the user should know that is not an error (rank 0 only)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"note: {message}", file=sys.stderr)


def _names(paths: list[Path]) -> str:
    shown = ", ".join(path.name for path in paths[:SHOWN_FILES])
    return shown + (", ..." if len(paths) > SHOWN_FILES else "")


class SegmentationDataset(Dataset):
    """Image/label pairs -> items, with an optional seeded transform.

    ``order`` lists the pair behind each item (default: every pair once); equal sampling of several
    sources repeats the pairs of the smaller ones there. The transform of item ``i`` in epoch ``e`` draws
    from a generator seeded by ``(seed, e, i)``, so the augmentation of an item does not depend on the
    order of loading, the number of workers or a resume. Call ``set_epoch`` each epoch to get fresh
    augmentations. Label values are checked against ``classes`` (Cityscapes-19 by default; see
    `fishertune.data.classes`).

    Pairs whose layout allows it (GTAV) are checked for size once, here: an image whose size differs from
    its label's is resized to it (bilinear) when loaded, and one note says how many.
    """

    def __init__(self, pairs: list[Pair], name: str, root: str | Path, transform: Transform | None = None,
                 seed: int = 0, order: list[int] | None = None, label_table: str = "",
                 resized: set[int] | None = None, classes: ClassSet = CITYSCAPES):
        if not pairs:
            raise FisherTuneError(f"no image/label pairs found in {root}")
        for pair in pairs:
            if pair.label is None:
                raise FisherTuneError(f"{name} has no labels (image {pair.image}): it can only be predicted "
                                      f"on (fishertune predict RUN --data SPEC)")
            if not pair.label.is_file():
                raise FisherTuneError(f"image {pair.image} has no label {pair.label}")
        self.pairs = pairs
        self.order = list(range(len(pairs))) if order is None else order
        self.name = name
        self.root = Path(root)
        self.transform = transform
        self.seed = seed
        self.classes = classes
        self.epoch = 0
        self.label_table = label_table
        self.resized = self._sizes_to_fix() if resized is None else resized

    def _sizes_to_fix(self) -> set[int]:
        checked = [i for i, pair in enumerate(self.pairs) if pair.resize_to_label]
        resized = [i for i in progress(checked, f"checking sizes of {self.name}")
                   if image_size(self.pairs[i].image) != image_size(self.pairs[i].label)]
        if resized:
            note(f"{self.name}: {len(resized)} image(s) differ in size from their label and are resized to "
                 f"it (bilinear): {_names([self.pairs[i].image for i in resized])}")
        return set(resized)

    def __len__(self) -> int:
        return len(self.order)

    def subset(self, indices) -> SegmentationDataset:
        """The pairs at ``indices`` (each once, in that order) as a dataset of the same name, label table
        and classes, without transform."""
        indices = [int(i) for i in indices]
        resized = {new for new, old in enumerate(indices) if old in self.resized}
        return SegmentationDataset([self.pairs[i] for i in indices], self.name, self.root,
                                   label_table=self.label_table, resized=resized, classes=self.classes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image [H,W,3] uint8, label [H,W] uint8 train ids) of item ``index``, checked for size and
        values."""
        pair_index = self.order[index]
        pair = self.pairs[pair_index]
        image = read_image(pair.image)
        label = pair.reader(pair.label)
        if pair.label_lut is not None:
            label = pair.label_lut[label.clip(0, len(pair.label_lut) - 1)]
        if label.shape != image.shape[:2]:
            if pair_index not in self.resized:
                raise FisherTuneError(f"label {pair.label} is {label.shape[1]}x{label.shape[0]} but its "
                                      f"image is {image.shape[1]}x{image.shape[0]}")
            image = np.array(Image.fromarray(image).resize(label.shape[::-1], Image.BILINEAR))
        if self.classes.bad_values(label).size:
            raise FisherTuneError(f"label {pair.label} holds values outside {self.classes.describe_values()} "
                                  f"(run `fishertune data check` to list every bad file)")
        return image, self.classes.to_train_ids(label)

    def __getitem__(self, index: int) -> dict:
        image_array, label_array = self.load_arrays(index)
        image = torch.from_numpy(image_array).permute(2, 0, 1).float().div_(255.0)
        label = torch.from_numpy(label_array).long()
        if self.transform is not None:
            seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
            image, label = self.transform(image, label, torch.Generator().manual_seed(int(seed)))
        return {"image": image, "label": label, "name": item_name(self.pairs[self.order[index]].image)}


def item_name(image: Path) -> str:
    """The image file's stem without the dataset's image suffix (``_leftImg8bit[_foggy_beta_*]``,
    ``_rgb_anon``)."""
    return image.stem.split("_leftImg8bit")[0].removesuffix("_rgb_anon")


class FolderDataset(SegmentationDataset):
    """A folder in the synth layout. A label without an image is refused as firmly as an image without a
    label: either means the folder is not what the user thinks it is."""

    def __init__(self, root: str | Path, transform: Transform | None = None, seed: int = 0,
                 classes: ClassSet = CITYSCAPES):
        files = resolve_spec(DatasetSpec("folder", Path(root)))
        if files.labels_without_images:
            orphan = files.labels_without_images[0]
            raise FisherTuneError(f"label {orphan} has no image in {files.root / 'images'}")
        super().__init__(files.pairs, files.name, files.root, transform, seed, label_table=files.label_table,
                         classes=classes)


def labelled_pairs(files: DatasetFiles) -> list[Pair]:
    """The pairs of a resolved spec that can be trained and evaluated on: an unlabelled split is refused;
    images without a label file are an error, or skipped with one note where the layout says so (BDD100K)."""
    if not files.spec.labelled:
        raise FisherTuneError(f"{files.spec.dataset} split '{files.spec.split}' has no labels: it can only "
                              f"be predicted on (fishertune predict RUN --data {files.spec})")
    layout = files.spec.layout
    if layout is None or layout.missing_labels != "skip":
        return files.pairs
    missing = [pair.image for pair in files.pairs if not pair.label.is_file()]
    if missing:
        note(f"{files.name}: skipped {len(missing)} image(s) without a label: {_names(missing)}")
    return [pair for pair in files.pairs if pair.label.is_file()]


def build_dataset(spec: str | DatasetSpec, transform: Transform | None = None,
                  seed: int = 0, classes: ClassSet = CITYSCAPES) -> SegmentationDataset:
    """A dataset from a spec: ``folder:PATH`` or ``<dataset>:ROOT[:split[:option]]``.

    Examples: ``folder:synth/fog``, ``cityscapes:/data/cityscapes:val``, ``acdc:/data/acdc:val:night``,
    ``gtav:/data/gta`` (all images), ``mapillary:/data/vistas:validation:rein``. A custom class set applies
    to folder specs only: the benchmark datasets' labels are Cityscapes train ids.
    """
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.parse(spec)
    if spec.layout is None:
        return FolderDataset(spec.root, transform, seed, classes)
    if not classes.is_cityscapes:
        raise FisherTuneError(f"{spec}: data.classes applies to folder: datasets only; the benchmark "
                              f"datasets hold the Cityscapes 19 classes")
    files = resolve_spec(spec)
    return SegmentationDataset(labelled_pairs(files), files.name, files.root, transform, seed,
                               label_table=files.label_table)


def build_sources(specs: list[str], sampling: Sampling = "proportional", transform: Transform | None = None,
                  seed: int = 0, classes: ClassSet = CITYSCAPES) -> SegmentationDataset:
    """Several training sources as one dataset (one spec: that dataset); see `concatenate`."""
    return concatenate([build_dataset(spec, classes=classes) for spec in specs], sampling, transform, seed)


def hold_out(parts: list[SegmentationDataset], holdout: HoldOut
             ) -> tuple[list[SegmentationDataset], SegmentationDataset]:
    """(the parts less the held-out images, the held-out images as one dataset named ``source_val``).

    The held-out images are drawn from the pooled images of all parts (see `HoldOut`) and removed before
    the training set is put together, so no sampling repeats them; ``source_val`` holds each once, with its
    source's label table and without a transform."""
    chosen = holdout.indices(sum(len(part.pairs) for part in parts))
    kept, held, start = [], [], 0
    for part in parts:
        mine = chosen[(chosen >= start) & (chosen < start + len(part.pairs))] - start
        rest = np.setdiff1d(np.arange(len(part.pairs)), mine)
        if not rest.size:
            raise FisherTuneError(f"data.val {holdout} holds out every image of {part.name}: hold out fewer")
        kept.append(part.subset(rest))
        held += [part.subset(mine)] if mine.size else []
        start += len(part.pairs)
    val = concatenate(held)
    val.name = "source_val"
    return kept, val


def concatenate(parts: list[SegmentationDataset], sampling: Sampling = "proportional",
                transform: Transform | None = None, seed: int = 0) -> SegmentationDataset:
    """Datasets of one class set as one (one dataset: itself), with ``transform`` seeded by ``seed``.

    ``proportional``: every image of every dataset once per epoch, so a source is drawn in proportion to
    its size. ``equal``: each dataset fills the same number of items per epoch, the size of the largest;
    the images of a smaller one are repeated in turn (each about largest/size times)."""
    if len(parts) == 1:
        parts[0].transform, parts[0].seed = transform, seed
        return parts[0]
    pairs, order, resized = [], [], set()
    largest = max(len(part) for part in parts)
    for part in parts:
        start = len(pairs)
        pairs += part.pairs
        order += [start + i % len(part) for i in range(len(part) if sampling == "proportional" else largest)]
        resized |= {start + i for i in part.resized}
    table = "; ".join(f"{part.name}: {part.label_table}" for part in parts)
    return SegmentationDataset(pairs, "+".join(part.name for part in parts), parts[0].root, transform, seed,
                               order, table, resized, parts[0].classes)
