"""Helpers that fabricate tiny dataset trees with the official layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, height: int = 6, width: int = 8, value: int = 100,
                fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path, format=fmt)
    return path


def write_label(path: Path, values, height: int = 6, width: int = 8, palette: bool = False) -> Path:
    """A label PNG whose pixels cycle through ``values``; ``palette`` writes a "P" image as GTAV and
    Mapillary do (palette indices are the ids)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.resize(np.asarray(values, np.uint8), height * width).reshape(height, width)
    image = Image.fromarray(array, mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([c for i in range(256) for c in (i, 255 - i, (7 * i) % 256)])
        image.putdata(array.ravel().tolist())
    image.save(path)
    return path


@pytest.fixture
def fabricate():
    return write_image, write_label
