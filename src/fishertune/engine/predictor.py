"""Segment image files and write one PNG per input: Cityscapes colours, train ids, or the label ids the
Cityscapes benchmark server takes; optionally an overlay.

Outputs mirror the inputs' folder tree under the output folder (relative to the dataset root for
``--data``, to the inputs' common folder for files), so every input gets its own output, named after
it: ``leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png`` keeps the ``{city}_{seq}_{frame}``
the Cityscapes server matches on, ``rgb_anon/fog/test/<seq>/<seq>_frame_<n>_rgb_anon.png`` the name ACDC's
server expects. Every input is checked, and every output name planned, before anything is written; the
outputs are written under hidden names and renamed at the end, so an interrupted or failing run leaves
none of them.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fishertune.data.classes import CITYSCAPES, ClassSet
from fishertune.data.image_io import read_image, write_png
from fishertune.data.labels import TRAINID_TO_ID
from fishertune.engine.evaluator import Inference
from fishertune.errors import FisherTuneError

Format = Literal["color", "trainid", "labelid"]
FORMATS: tuple[str, ...] = ("color", "trainid", "labelid")
OVERLAY_ALPHA = 0.5
"""Weight of the mask colours in the overlay: overlay = (1 - a) * image + a * colours."""


@dataclass(frozen=True)
class Output:
    """Where the prediction for ``image`` goes: ``mask`` (in the chosen format) and ``overlay`` (or None)."""

    image: Path
    mask: Path
    overlay: Path | None


def plan_outputs(images: list[Path], out_dir: Path, base: Path | None = None,
                 overlay: bool = False, overwrite: bool = False) -> list[Output]:
    """One output per input, mirroring each input's path relative to ``base`` (default: the inputs'
    common folder) under ``out_dir``, with the suffix ``.png``. Refuses, before anything is written, two
    inputs that would share an output (``a.png`` and ``a.jpg``), an output that is an input (paths compared
    resolved, so a symlink to an input counts), and an existing file in a folder that holds an input
    (``predict photos/a.jpg --out photos`` would replace a photo ``photos/a.png`` of the user's); any other
    existing output file unless ``overwrite`` (an earlier prediction, or a file of the user's)."""
    images = [Path(os.path.abspath(image)) for image in images]
    common = os.path.commonpath([image.parent for image in images])
    base = Path(common if base is None else os.path.abspath(base))
    out_dir = Path(os.path.abspath(out_dir))
    outputs, seen = [], {}
    for image in images:
        relative = image.relative_to(base)
        mask = out_dir / relative.with_suffix(".png")
        extra = mask.with_name(f"{mask.stem}_overlay.png") if overlay else None
        for target in filter(None, (mask, extra)):
            if target in seen and seen[target] == image:
                raise FisherTuneError(f"{image} is given twice")
            if target in seen:
                raise FisherTuneError(f"{seen[target]} and {image} would both be written to {target}: "
                                      f"rename one of them")
            seen[target] = image
        outputs.append(Output(image, mask, extra))
    inputs = {image.resolve() for image in images}
    input_folders = {image.parent for image in inputs}
    for target, image in seen.items():
        resolved = target.resolve()
        if resolved in inputs:
            raise FisherTuneError(f"the output for {image} would overwrite the input {resolved}: "
                                  f"choose another --out")
        if target.exists() and resolved.parent in input_folders:
            raise FisherTuneError(f"the output for {image} would replace {target}, a file among the inputs' "
                                  f"own files: choose another --out")
        if target.exists() and not overwrite:
            raise FisherTuneError(f"the output for {image} would replace {target}, which exists: pass "
                                  f"--overwrite to replace an earlier predict's outputs, or choose another "
                                  f"--out")
    return outputs


def encode(prediction: np.ndarray, fmt: Format, classes: ClassSet = CITYSCAPES) -> np.ndarray:
    """[H, W] train ids -> the array written for ``fmt``: RGB colours (the class set's palette), train ids,
    or Cityscapes label ids (``fishertune.data.labels.TRAINID_TO_ID``, from cityscapesscripts)."""
    if fmt == "color":
        return classes.colorize(prediction)
    if fmt == "trainid":
        return prediction.astype(np.uint8)
    if fmt == "labelid":
        return TRAINID_TO_ID[prediction]
    raise FisherTuneError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


def check_inputs(images: list[Path]) -> None:
    """Every input exists and decodes whole (a JPEG truncated after a valid header is found here, not
    after the outputs of the inputs before it were written), before any output is written; a bad one is
    one error naming it."""
    for image in images:
        if Path(image).is_dir():
            raise FisherTuneError(f"{image} is a folder: give its image files ({Path(image) / '*.png'}) or "
                                  f"--data folder:PATH for a dataset folder")
        if not Path(image).is_file():
            raise FisherTuneError(f"image not found: {image}")
    for image in images:
        read_image(image)  # raises a one-line error for an unreadable or truncated file


@torch.no_grad()
def predict_images(model: nn.Module, images: list[str | Path], out_dir: str | Path, inference: Inference,
                   device: torch.device, fmt: Format = "color", overlay: bool = False,
                   base: str | Path | None = None, classes: ClassSet = CITYSCAPES, progress: bool = False,
                   inputs_checked: bool = False, overwrite: bool = False) -> list[Path]:
    """Segment every image and write its outputs (see the module docstring); returns the written files.
    Colours follow ``classes`` (the run's `data.classes`). Every input is decoded once before the first
    output is written (`check_inputs`), unless the caller did that already (inputs_checked=True)."""
    if fmt not in FORMATS:
        raise FisherTuneError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "labelid" and not classes.is_cityscapes:
        raise FisherTuneError("--format labelid writes Cityscapes label ids; this run has its own classes "
                              "(data.classes): use --format trainid or color")
    images = [Path(image) for image in images]
    if not images:
        raise FisherTuneError("no images to predict")
    outputs = plan_outputs(images, Path(out_dir), None if base is None else Path(base), overlay, overwrite)
    if not inputs_checked:
        check_inputs(images)
    staged: list[tuple[Path, Path]] = []  # (hidden file written, its final name)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"

    def stage(final: Path, array: np.ndarray) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        staged.append((final.with_name(f".{final.name}.{token}.png"), final))
        write_png(staged[-1][0], array)

    try:  # every output is staged under a hidden name and renamed at the end: all of them or none
        for output in tqdm(outputs, desc="predict", disable=not progress, leave=False):
            image = read_image(output.image)
            tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
            prediction = model.predict(tensor, **inference.kwargs()).argmax(1)[0].cpu().numpy()
            stage(output.mask, encode(prediction, fmt, classes))
            if output.overlay is not None:
                blend = (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * classes.colorize(prediction)
                stage(output.overlay, blend.round().astype(np.uint8))
    except BaseException:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise
    for temp, final in staged:
        os.replace(temp, final)
    return [final for _, final in staged]
