"""Reading and writing the image and label files of a dataset, with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fishertune.atomic import write_atomic
from fishertune.errors import FisherTuneError


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image file -> [H, W, 3] uint8 (grey and RGBA images are converted to RGB)."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise FisherTuneError(f"cannot read image {path}: {error}") from None


def read_label(path: str | Path) -> np.ndarray:
    """A label PNG -> [H, W] integer array of the stored values.

    Palette ("P") PNGs, as GTAV and Mapillary ship them, keep their palette *indices* (the class ids); they
    are never converted to colours. Colour label images are refused: they are visualisations, not labels.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16", "1"):
                raise FisherTuneError(
                    f"label {path} has colour mode {image.mode}; expected one channel of ids"
                )
            return np.asarray(image).astype(np.int64)
    except (OSError, ValueError, SyntaxError) as error:
        raise FisherTuneError(f"cannot read label {path}: {error}") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            return height, width
    except (OSError, ValueError, SyntaxError) as error:
        raise FisherTuneError(f"cannot read image {path}: {error}") from None


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 [H, W] or [H, W, 3] array as PNG atomically (temp file in the same folder + rename)."""
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    write_atomic(path, lambda temp: image.save(temp, format="PNG"))
