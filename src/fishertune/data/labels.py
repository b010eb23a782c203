"""The Cityscapes 19-class train-id label space, taken from ``cityscapesscripts.helpers.labels``.

Every label map inside FisherTune holds train ids 0..18, with 255 meaning "ignore". Raw Cityscapes-style
label ids (0..33, as in ``*_gtFine_labelIds.png`` or the GTAV label PNGs) are converted with
``ID_TO_TRAINID``; ids the benchmark ignores (parking, guard rail, caravan, ...) map to 255.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

IGNORE_INDEX = 255
NUM_CLASSES = 19

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
