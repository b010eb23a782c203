"""The Cityscapes 19-class train-id label space, taken from ``cityscapesscripts.helpers.labels``.

Every label map inside FisherTune holds train ids 0..18, with 255 meaning "ignore". Raw Cityscapes-style
label ids (0..33, as in ``*_gtFine_labelIds.png`` or the GTAV label PNGs) are converted with
``ID_TO_TRAINID``; ids the benchmark ignores (parking, guard rail, caravan, ...) map to 255.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS
from cityscapesscripts.helpers.labels import trainId2label as _trainId2label

from fishertune.label_space import IGNORE_INDEX, NUM_CLASSES

_TRAIN_LABELS = sorted(
    (label for label in _CITYSCAPES_LABELS if 0 <= label.trainId < IGNORE_INDEX), key=lambda lb: lb.trainId
)
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _TRAIN_LABELS)
"""Class names in train-id order: ``CLASS_NAMES[0] == "road"``, ..., ``CLASS_NAMES[18] == "bicycle"``."""

PALETTE = np.array([label.color for label in _TRAIN_LABELS], dtype=np.uint8)
"""[19, 3] uint8 RGB colour of each train id (the official Cityscapes colours)."""

ID_TO_TRAINID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
"""[256] lookup table from raw Cityscapes label id to train id (255 for ignored or unknown ids)."""
for _label in _CITYSCAPES_LABELS:
    if 0 <= _label.id < 256:
        ID_TO_TRAINID[_label.id] = _label.trainId if 0 <= _label.trainId < IGNORE_INDEX else IGNORE_INDEX

assert len(CLASS_NAMES) == NUM_CLASSES


def ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a raw Cityscapes label-id map (any integer dtype, values 0..255) to train ids (uint8)."""
    return ID_TO_TRAINID[np.asarray(label_ids, dtype=np.int64).clip(0, 255)]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """[H, W] train ids -> [H, W, 3] uint8 RGB with the Cityscapes colours; 255 (ignore) is black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut[np.asarray(train_ids, dtype=np.int64).clip(0, 255)]


TRAINID_TO_ID = np.zeros(256, dtype=np.uint8)
"""[256] lookup table from train id to the Cityscapes label id the benchmark servers expect
(``cityscapesscripts.helpers.labels.trainId2label``); 255 (ignore) and unknown values -> 0 (unlabeled)."""
for _train_id in range(NUM_CLASSES):
    TRAINID_TO_ID[_train_id] = _trainId2label[_train_id].id


def _table(pairs: dict[int, int]) -> np.ndarray:
    """A [256] uint8 lookup table: ``pairs`` {stored id: train id}, every other value -> 255."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for stored, train_id in pairs.items():
        table[stored] = train_id
    return table


# -------------------------------------------------------------------------------------------- SYNTHIA

SYNTHIA_TO_TRAINID = _table({3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11,
                             17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18})
"""SYNTHIA class ids (the first channel of ``GT/LABELS/*.png``; the table of the SYNTHIA README) -> Cityscapes
train ids, as DAFormer's ``tools/convert_datasets/synthia.py`` maps them. Terrain (16), truck (18) and train
(20) are in the table but do not occur in SYNTHIA-RAND-CITYSCAPES; void (0), parking-slot (13), road-work (14)
and lane-marking (22) -> 255."""

CLASS_SUBSETS: dict[str, tuple[int, ...]] = {
    "19": tuple(range(NUM_CLASSES)),
    "16": tuple(t for t in range(NUM_CLASSES) if t not in (9, 14, 16)),
    "13": tuple(t for t in range(NUM_CLASSES) if t not in (3, 4, 5, 9, 14, 16)),
}
"""The train ids of the class sets SYNTHIA results are reported on: all 19; the 16 SYNTHIA labels (no
terrain, truck, train); the 13 of the UDA literature (also no wall, fence, pole)."""


def subset_table(table: np.ndarray, subset: str) -> np.ndarray:
    """``table`` with every train id outside ``CLASS_SUBSETS[subset]`` sent to 255."""
    keep = np.zeros(256, dtype=bool)
    keep[list(CLASS_SUBSETS[subset])] = True
    return np.where(keep[table], table, IGNORE_INDEX).astype(np.uint8)


# ------------------------------------------------------------------------------------------- Mapillary

MAPILLARY_TABLES: dict[str, np.ndarray] = {
    # RobustNet datasets/mapillary.py and HRDA tools/convert_datasets/mapillary.py
    "robustnet": _table({13: 0, 24: 0, 41: 0, 2: 1, 15: 1, 17: 2, 6: 3, 3: 4, 45: 5, 47: 5, 48: 6, 50: 7,
                         30: 8, 29: 9, 27: 10, 19: 11, 20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15,
                         58: 16, 57: 17, 52: 18}),
    # openseg.pytorch's mapillary2cityscape converter, as Rein ships it (tools/convert_datasets/)
    "rein": _table({7: 0, 8: 0, 10: 0, 13: 0, 14: 0, 23: 0, 24: 0, 2: 1, 9: 1, 11: 1, 15: 1, 17: 2, 6: 3,
                    3: 4, 44: 5, 45: 5, 47: 5, 48: 6, 46: 7, 49: 7, 50: 7, 30: 8, 29: 9, 27: 10, 19: 11,
                    20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15, 58: 16, 57: 17, 52: 18}),
}
"""Mapillary Vistas v1.2 id (the index in its ``config.json`` labels) -> Cityscapes train id; two tables whose
numbers are not comparable:

- ``robustnet`` (default; RobustNet, HRDA and the DGSS papers built on them): road <- road, lane marking
  (general), manhole; sidewalk <- curb, sidewalk; pole <- pole, utility pole; traffic sign <- front;
  rider <- bicyclist, motorcyclist, other rider.
- ``rein`` (Rein and the papers built on its code): also road <- bike lane, crosswalk (plain), parking,
  service lane, lane marking (crosswalk), but not manhole; sidewalk <- curb cut, pedestrian area;
  pole <- street light; traffic sign <- sign frame, sign back.

Everything else -> 255."""
