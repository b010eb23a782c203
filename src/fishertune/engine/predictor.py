"""Segment image files and write colourised masks and overlays (Cityscapes palette)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fishertune.engine.evaluator import Inference
from fishertune.errors import FisherTuneError

OVERLAY_ALPHA = 0.5
"""Weight of the mask colours in the overlay: overlay = (1 - a) * image + a * colours."""


def output_names(paths: list[Path]) -> list[str]:
    """Output stem per image: the file stem, with the parent folder's name added where stems repeat."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


@torch.no_grad()
def predict_images(model: nn.Module, paths: list[str | Path], out_dir: str | Path, inference: Inference,
                   device: torch.device) -> list[Path]:
    """Write <name>_mask.png and <name>_overlay.png per image; every input is checked before any write."""
    from fishertune.data.image_io import image_size, read_image, write_png
    from fishertune.data.labels import colorize

    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise FisherTuneError(f"image not found: {path}")
        image_size(path)  # raises a one-line error for an unreadable file
    written = []
    for path, name in zip(paths, output_names(paths)):
        image = read_image(path)
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
        prediction = model.predict(tensor, **inference.kwargs()).argmax(1)[0].cpu().numpy()
        colours = colorize(prediction)
        overlay = ((1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colours).round().astype(np.uint8)
        for suffix, array in (("mask", colours), ("overlay", overlay)):
            target = Path(out_dir) / f"{name}_{suffix}.png"
            write_png(target, array)
            written.append(target)
    return written
