"""Reading and writing the image and label files of a dataset, with one-line errors naming the file.

Every read
- checks the size from the file's header before decoding the pixels: an image of more than `max_pixels`
  pixels (default `MAX_PIXELS`, 50 megapixels; `set_max_pixels` / `data.max_pixels` / `--max-pixels`
  change it) is refused by name, and so is one PIL itself refuses as a decompression bomb;
- applies the EXIF orientation (a photo taken upright is read upright, labels alike);
- scales 16-bit images to 8 bits (value · 255 / 65535, rounded) rather than clipping them to white.
`load_rgb` reads images in memory (PIL images, arrays) the same way, for the Python API.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fishertune.atomic import write_atomic
from fishertune.errors import InputError, UsageError

MAX_PIXELS = 50_000_000
"""Default largest image (width x height) read; larger ones are refused before they are decoded."""
_limit = {"max_pixels": MAX_PIXELS}

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
"""Single-channel modes PIL gives 16-bit PNG and TIFF images (mode "I" holds them as 32-bit integers)."""


def set_max_pixels(max_pixels: int | None) -> None:
    """Change the largest image every later read accepts (None: back to MAX_PIXELS)."""
    if max_pixels is not None and max_pixels < 1:
        raise InputError(f"the image size limit must be at least 1 pixel, got {max_pixels}")
    _limit["max_pixels"] = MAX_PIXELS if max_pixels is None else int(max_pixels)


ORIENTATION_TAG = 0x0112
"""The EXIF tag of the orientation; values 5-8 are a quarter turn (width and height swap)."""


def _check_size(image: Image.Image, name: str) -> None:
    width, height = image.size
    limit = _limit["max_pixels"]
    if width * height > limit:
        raise InputError(f"{name} is {width}x{height} = {width * height / 1e6:.3g} megapixels, over the "
                         f"limit of {limit / 1e6:g} (data.max_pixels, or --max-pixels)")


@contextlib.contextmanager
def _open(path: str | Path, kind: str, orient: bool = True) -> Iterator[Image.Image]:
    """The image at `path` with its size checked from the header (pixels not yet decoded), EXIF-oriented
    unless orient=False; a problem is one InputError naming the file."""
    try:
        with Image.open(path) as image:
            _check_size(image, f"{kind} {path}")
            yield ImageOps.exif_transpose(image) if orient else image
    except Image.DecompressionBombError as error:
        raise InputError(f"{kind} {path} is too large to decode safely: {error}") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"cannot read {kind} {path}: {error}") from None


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image file -> [H, W, 3] uint8 (grey and RGBA images are converted to RGB; 16-bit ones are
    scaled to 8 bits). Other modes that cannot be shown as RGB (float images) are refused."""
    with _open(path, "image") as image:
        return _rgb(image, f"image {path}")


def _rgb(image: Image.Image, name: str) -> np.ndarray:
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise InputError(f"{name} has {image.mode} values outside 0-65535; expected 8- or 16-bit pixels")
        grey = np.round(values * (255 / 65535)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        raise InputError(f"{name} holds floating-point pixels (mode F); expected 8- or 16-bit")
    return np.array(image.convert("RGB"))


def load_rgb(image: str | os.PathLike | Image.Image | np.ndarray, name: str = "the image") -> np.ndarray:
    """[H, W, 3] uint8 of an image file, a PIL image, or a numpy array of pixels as a file holds them
    ([H, W] or [H, W, 1] grey, uint8 or uint16; [H, W, 3] RGB or [H, W, 4] RGBA, uint8). The Python API reads
    images here so that it sees the very pixels `fishertune predict` sees (the same size limit, EXIF
    orientation and 16-bit scaling as `read_image`); `name` names an in-memory image in errors. An argument
    that is no image (another type, shape or dtype, or an empty one) is a UsageError."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        image = _array_image(image)
    if not isinstance(image, Image.Image):
        raise UsageError(f"expected an image file path, a PIL image or a numpy array, not "
                         f"{type(image).__name__}")
    if 0 in image.size:
        raise UsageError(f"{name} is empty ({image.width}x{image.height} pixels)")
    _check_size(image, name)
    try:
        return _rgb(ImageOps.exif_transpose(image), name)
    except (OSError, ValueError, SyntaxError) as error:  # a PIL image opened lazily decodes only here
        raise InputError(f"cannot read {name}: {error}") from None


def _array_image(array: np.ndarray) -> Image.Image:
    pixels = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
    grey = pixels.ndim == 2 and pixels.dtype in (np.uint8, np.uint16)
    colour = pixels.ndim == 3 and pixels.shape[2] in (3, 4) and pixels.dtype == np.uint8
    if not (grey or colour):
        raise UsageError(f"expected a numpy array of pixels, [H, W] grey (uint8 or uint16) or [H, W, 3] RGB "
                         f"or [H, W, 4] RGBA (uint8), got {array.dtype} {list(array.shape)}")
    if 0 in pixels.shape:
        raise UsageError(f"expected a numpy array of pixels, got an empty one {list(array.shape)}")
    return Image.fromarray(np.ascontiguousarray(pixels))


def read_label(path: str | Path) -> np.ndarray:
    """A label PNG -> [H, W] integer array of the stored values.

    Palette ("P") PNGs, as GTAV and Mapillary ship them, keep their palette *indices* (the class ids); they
    are never converted to colours. Colour label images are refused: they are visualisations, not labels.
    """
    with _open(path, "label") as image:
        if image.mode not in ("L", "P", "I", "I;16", "1"):
            raise InputError(f"label {path} has colour mode {image.mode}; expected one channel of ids")
        return np.asarray(image).astype(np.int64)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file as `read_image` returns it (EXIF orientation applied), from the
    header, without decoding the pixels; refuses files over the size limit."""
    with _open(path, "image", orient=False) as image:
        width, height = image.size
        if image.getexif().get(ORIENTATION_TAG) in (5, 6, 7, 8):
            width, height = height, width
        return height, width


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 [H, W] or [H, W, 3] array as PNG atomically (temp file in the same folder + rename)."""
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    write_atomic(path, lambda temp: image.save(temp, format="PNG"))
