"""Class sets: the names, colours and ignore value of a label space (Cityscapes-19 unless `data.classes`).

Inside FisherTune a label map always holds class ids 0..C-1 and 255 (IGNORE_INDEX) for "ignore". A custom
set, given in a config as

    data:
      classes: [background, crop, weed]                 # names only, or
      classes: {names: [background, crop, weed], palette: [[0, 0, 0], [0, 200, 0], [200, 0, 0]],
                ignore_index: 254}

describes label files whose values are 0..C-1 plus `ignore_index` (default 255), which is mapped to 255 on
reading. Without a palette the first colours are Cityscapes' and the rest are spread over the hue circle.
Custom sets apply to `folder:` datasets; the DGSS benchmark datasets always hold the Cityscapes-19 ids.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from fishertune.data.labels import CLASS_NAMES, IGNORE_INDEX, PALETTE
from fishertune.errors import FisherTuneError

MAX_CLASSES = IGNORE_INDEX
"""Class ids must stay below 255, the ignore value inside FisherTune."""


@dataclass(frozen=True, eq=False)
class ClassSet:
    names: tuple[str, ...]
    palette: np.ndarray
    """[C, 3] uint8 RGB colour of each class id."""
    ignore_index: int = IGNORE_INDEX
    """The label-file value meaning "ignore" (mapped to 255 on reading)."""

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def is_cityscapes(self) -> bool:
        return self.names == CLASS_NAMES and self.ignore_index == IGNORE_INDEX

    def describe_values(self) -> str:
        """The valid label values in words, e.g. "0-18 and 255"."""
        return f"0-{self.num_classes - 1} and {self.ignore_index}"

    def bad_values(self, label: np.ndarray) -> np.ndarray:
        """The distinct values of a label-file array that are neither a class id nor the ignore value."""
        values = np.unique(label)
        return values[((values < 0) | (values >= self.num_classes)) & (values != self.ignore_index)]

    def to_train_ids(self, label: np.ndarray) -> np.ndarray:
        """A checked label-file array with the ignore value mapped to 255 (uint8)."""
        out = label.astype(np.uint8)
        if self.ignore_index != IGNORE_INDEX:
            out[label == self.ignore_index] = IGNORE_INDEX
        return out

    def colorize(self, ids: np.ndarray) -> np.ndarray:
        """[H, W] class ids -> [H, W, 3] uint8 RGB; 255 (ignore) is black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[:self.num_classes] = self.palette
        return lut[np.asarray(ids, dtype=np.int64).clip(0, 255)]

    @classmethod
    def from_config(cls, raw: list | dict | None) -> ClassSet:
        """`data.classes` (None: Cityscapes-19), checked: every problem is one FisherTuneError line."""
        if raw is None:
            return CITYSCAPES
        spec = {"names": raw} if isinstance(raw, list) else dict(raw)
        unknown = sorted(set(spec) - {"names", "palette", "ignore_index"})
        if unknown:
            raise FisherTuneError(f"unknown key data.classes.{unknown[0]}; valid: names, palette, "
                                  f"ignore_index")
        names = spec.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise FisherTuneError("data.classes needs a non-empty list of class names")
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise FisherTuneError(f"data.classes names {twice!r} twice")
        if len(names) > MAX_CLASSES:
            raise FisherTuneError(f"data.classes has {len(names)} classes; at most {MAX_CLASSES} fit")
        ignore = spec.get("ignore_index", IGNORE_INDEX)
        if not isinstance(ignore, int) or isinstance(ignore, bool) or not len(names) <= ignore <= 255:
            raise FisherTuneError(f"data.classes.ignore_index must be an integer from {len(names)} (past the "
                                  f"last class id) to 255, got {ignore!r}")
        palette = spec.get("palette")
        if palette is None:
            palette = default_palette(len(names))
        else:
            array = np.asarray(palette, dtype=object)
            if array.shape != (len(names), 3) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in array.ravel()):
                raise FisherTuneError(f"data.classes.palette must hold one [r, g, b] (integers 0-255) per "
                                      f"class: {len(names)} colours")
            palette = array.astype(np.uint8)
        return cls(tuple(names), palette, ignore)


def default_palette(n: int) -> np.ndarray:
    """Cityscapes' colours for the first 19 ids, then hues spaced by the golden angle (distinct, fixed)."""
    colours = [tuple(c) for c in PALETTE[:n]]
    for i in range(len(colours), n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        colours.append((round(255 * r), round(255 * g), round(255 * b)))
    return np.array(colours, dtype=np.uint8).reshape(n, 3)


CITYSCAPES = ClassSet(CLASS_NAMES, PALETTE, IGNORE_INDEX)
"""The default: Cityscapes' 19 train ids, names and colours."""
