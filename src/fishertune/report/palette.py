"""Colours: the Cityscapes label palette for segmentation maps, Okabe-Ito for methods (colour-blind safe)."""

from __future__ import annotations

from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import trainId2label

from fishertune.errors import FisherTuneError
from fishertune.report.breakdown import to_numpy

IGNORE = 255
NUM_CLASSES = 19
CLASS_NAMES: tuple[str, ...] = tuple(trainId2label[i].name for i in range(NUM_CLASSES))

# PALETTE[train id] = RGB uint8; 255 (ignore) is black. Rows 19..254 stay unused (colorize rejects them).
PALETTE = np.zeros((256, 3), dtype=np.uint8)
for _train_id in range(NUM_CLASSES):
    PALETTE[_train_id] = trainId2label[_train_id].color

OKABE_ITO: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999",
)


def method_colors(names) -> dict[str, str]:
    """A fixed colour per method, cycling Okabe-Ito."""
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(names)}


def colorize(label: Any) -> np.ndarray:
    """HxW Cityscapes train ids (0..18, 255 = ignore) -> HxWx3 uint8 RGB with 255 drawn black."""
    ids = to_numpy(label).astype(np.int64)
    bad = (ids < 0) | ((ids >= NUM_CLASSES) & (ids != IGNORE))
    if bad.any():
        shown = sorted(set(ids[bad].tolist()))[:5]
        raise FisherTuneError(f"label values {shown} are not Cityscapes train ids 0-18 or 255 (ignore)")
    return PALETTE[ids]
