"""The Python inference API: `fishertune.load_pretrained(DIR)` and `model.predict(image)` (docs/export.md).

    import fishertune
    model = fishertune.load_pretrained("exports/fishertune")   # an export folder or a run folder
    ids = model.predict(Image.open("street.jpg"))             # [H, W] uint8 class ids

`predict` takes an image file path, a PIL image, a numpy array of pixels (uint8 or 16-bit, as
`fishertune.data.image_io.load_rgb` lists them), a float numpy array [H, W, 3] in [0, 1], or a float tensor
in [0, 1] ([3, H, W] or [B, 3, H, W]), and returns class ids at the image's size: a numpy uint8 array for a
path, a PIL image or an array, a long tensor ([H, W] or [B, H, W], on the input's device) for a tensor.
Paths, PIL images and integer arrays are read by the loader `fishertune predict` reads its files with (EXIF
orientation, 16-bit scaling, size limit), so the API and the CLI give the same masks. An argument predict
does not take (type, shape, dtype, an empty image, values outside [0, 1] or NaN) is a UsageError; an image
that cannot be read is an InputError, as from the CLI. Whole-image or sliding-window inference follows the
run's `eval` section (`model.inference` may be replaced).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fishertune.data.classes import ClassSet
from fishertune.data.image_io import load_rgb
from fishertune.engine.assemble import run_classes
from fishertune.engine.build import load_run
from fishertune.engine.config import Config
from fishertune.engine.evaluator import Inference
from fishertune.errors import FisherTuneError, InputError, UsageError


class PretrainedSegmenter:
    """A trained segmenter with its class set and inference settings."""

    def __init__(self, config: Config, segmentor: nn.Module):
        self.config = config
        self.segmentor = segmentor.eval()
        self.classes: ClassSet = run_classes(config)
        self.inference = Inference.from_config(config)

    @property
    def device(self) -> torch.device:
        return next(self.segmentor.parameters()).device

    def to(self, device: str | torch.device) -> PretrainedSegmenter:
        self.segmentor.to(checked_device(device))
        return self

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores [B, C, H, W] of float images [B, 3, H, W] in [0, 1]."""
        return self.segmentor.predict(images.to(self.device), **self.inference.kwargs())

    @torch.no_grad()
    def predict(self, image) -> np.ndarray | torch.Tensor:
        """Class ids at the input size (see the module docstring for the accepted inputs)."""
        if isinstance(image, torch.Tensor):
            batch = _float_pixels(image, "a float tensor [3, H, W] or [B, 3, H, W]")
            ids = self.logits(batch).argmax(1).to(image.device)
            return ids if image.dim() == 4 else ids[0]
        if isinstance(image, np.ndarray) and image.dtype.kind == "f":
            if image.ndim != 3 or image.shape[2] != 3:
                raise UsageError(f"predict expects a float numpy array [H, W, 3] in [0, 1], got "
                                 f"{image.dtype} {list(image.shape)}")
            batch = _float_pixels(torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1),
                                  "a float numpy array [H, W, 3]")
        else:
            batch = torch.from_numpy(load_rgb(image)).permute(2, 0, 1).float().div(255).unsqueeze(0)
        return self.logits(batch).argmax(1)[0].cpu().numpy().astype(np.uint8)


def _float_pixels(image: torch.Tensor, expected: str) -> torch.Tensor:
    """A float batch [B, 3, H, W] of `image` ([3, H, W] or [B, 3, H, W]), refused unless every value is in
    [0, 1]: pixels in 0-255 or NaN would give a mask without complaint, and a wrong one."""
    if not image.is_floating_point() or image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise UsageError(f"predict expects {expected} in [0, 1], got {image.dtype} {list(image.shape)}")
    if image.numel() == 0:
        raise UsageError(f"predict got an empty image, {image.dtype} {list(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        raise UsageError(f"predict got {expected} holding NaN or infinite values")
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1:
        raise UsageError(f"predict expects {expected} in [0, 1], got values from {low:g} to {high:g} (pixels "
                         f"in 0-255: divide by 255, or pass them as uint8)")
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    return batch.float()


def checked_device(device: str | torch.device | int) -> torch.device:
    """`device` as a torch.device this machine can use: a name torch does not know, or a device this torch
    build or machine lacks ('cuda' on a CPU-only torch), is one line instead of torch's traceback."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise UsageError(f"{device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'mps'): "
                         f"{_first_line(error)}") from None
    if parsed.type == "meta":
        raise UsageError("the meta device holds no values; give a device to compute on ('cpu', 'cuda', ...)")
    try:
        torch.empty(0, device=parsed)
    except (RuntimeError, AssertionError) as error:  # AssertionError: "Torch not compiled with CUDA enabled"
        raise InputError(f"device {str(parsed)!r} is not available here: {_first_line(error)}") from None
    return parsed


def _first_line(error: BaseException) -> str:
    """The gist of torch's message: its first sentence (some run to a list of every backend), cut short."""
    lines = str(error).strip().splitlines()
    text = lines[0].split(". ")[0] if lines else type(error).__name__
    return text if len(text) <= 150 else f"{text[:147]}..."


def load_pretrained(directory: str | Path, backbone: str | None = None,
                    device: str | torch.device | None = None) -> PretrainedSegmenter:
    """Load an export folder (`fishertune export RUN --out DIR`), a finished run folder, or a Hugging Face
    Hub id ("owner/name") of an uploaded export: taken from the local Hub cache when it holds it (no
    network needed), else downloaded (`huggingface_hub.snapshot_download`).

    For an export, the base backbone is rebuilt from its config (`backbone` gives another location for it:
    hub id, folder or file) and refused when its weights hash differs from the one the export was made
    from; then the method's change and the head are applied.
    """
    device = None if device is None else checked_device(device)  # before the work of loading
    return PretrainedSegmenter(*load_run(hub_folder(directory), device, backbone))


def hub_folder(name: str | Path) -> str | Path:
    """`name` itself when it is a local path; for a Hub id not found locally, the snapshot folder of the
    local Hub cache ($HF_HUB_CACHE) that holds it, or downloaded into it."""
    text = str(name)
    if Path(text).expanduser().exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        return name
    # network client (huggingface_hub), imported only when a Hub id is to be resolved
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(text, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    try:
        return snapshot_download(text)
    except Exception as error:  # no network, no such repository, no access: all one line
        raise FisherTuneError(f"{text} is neither a folder here nor in the local Hugging Face cache, and "
                              f"downloading it failed ({type(error).__name__})") from None
