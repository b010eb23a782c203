"""The Python inference API: `fishertune.load_pretrained(DIR)` and `model.predict(image)` (docs/export.md).

    import fishertune
    model = fishertune.load_pretrained("exports/fishertune")   # an export folder or a run folder
    ids = model.predict(Image.open("street.jpg"))             # [H, W] uint8 class ids

`predict` takes a PIL image, a numpy array [H, W, 3] uint8, or a float tensor in [0, 1] ([3, H, W] or
[B, 3, H, W]) and returns class ids at the input size: a numpy uint8 array for a PIL image or an array, a
long tensor ([H, W] or [B, H, W], on the input's device) for a tensor. Whole-image or sliding-window
inference follows the run's `eval` section (`model.inference` may be replaced).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fishertune.data.classes import ClassSet
from fishertune.engine.config import Config
from fishertune.engine.evaluator import Inference
from fishertune.errors import FisherTuneError


class PretrainedSegmenter:
    """A trained segmenter with its class set and inference settings."""

    def __init__(self, config: Config, segmentor: nn.Module):
        from fishertune.engine.build import run_classes

        self.config = config
        self.segmentor = segmentor.eval()
        self.classes: ClassSet = run_classes(config)
        self.inference = Inference.from_config(config)

    @property
    def device(self) -> torch.device:
        return next(self.segmentor.parameters()).device

    def to(self, device: str | torch.device) -> PretrainedSegmenter:
        self.segmentor.to(device)
        return self

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores [B, C, H, W] of float images [B, 3, H, W] in [0, 1]."""
        return self.segmentor.predict(images.to(self.device), **self.inference.kwargs())

    @torch.no_grad()
    def predict(self, image) -> np.ndarray | torch.Tensor:
        """Class ids at the input size (see the module docstring for the accepted inputs)."""
        if isinstance(image, torch.Tensor):
            if not image.is_floating_point() or image.dim() not in (3, 4) or image.shape[-3] != 3:
                raise FisherTuneError(f"predict expects a float tensor [3, H, W] or [B, 3, H, W] in [0, 1], "
                                      f"got {image.dtype} {list(image.shape)}")
            batch = image if image.dim() == 4 else image.unsqueeze(0)
            ids = self.logits(batch.float()).argmax(1).to(image.device)
            return ids if image.dim() == 4 else ids[0]
        array = _rgb_array(image)
        tensor = torch.from_numpy(np.array(array)).permute(2, 0, 1).float().div(255).unsqueeze(0)
        return self.logits(tensor).argmax(1)[0].cpu().numpy().astype(np.uint8)


def _rgb_array(image) -> np.ndarray:
    """[H, W, 3] uint8 from a PIL image (converted to RGB) or a numpy array of that shape and dtype."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise FisherTuneError(f"predict expects a numpy array [H, W, 3] uint8, got {image.dtype} "
                                  f"{list(image.shape)}")
        return image
    raise FisherTuneError(f"predict takes a PIL image, a numpy array or a float tensor, not "
                          f"{type(image).__name__}")


def load_pretrained(directory: str | Path, backbone: str | None = None,
                    device: str | torch.device | None = None) -> PretrainedSegmenter:
    """Load an export folder (`fishertune export RUN --out DIR`), a finished run folder, or a Hugging Face
    Hub id ("owner/name") of an uploaded export: taken from the local Hub cache when it holds it (no
    network needed), else downloaded (`huggingface_hub.snapshot_download`).

    For an export, the base backbone is rebuilt from its config (`backbone` gives another location for it:
    hub id, folder or file) and refused when its weights hash differs from the one the export was made
    from; then the method's change and the head are applied.
    """
    from fishertune.engine.build import load_run

    return PretrainedSegmenter(*load_run(hub_folder(directory), device, backbone))


def hub_folder(name: str | Path) -> str | Path:
    """`name` itself when it is a local path; for a Hub id not found locally, the snapshot folder of the
    local Hub cache ($HF_HUB_CACHE) that holds it, or downloaded into it."""
    text = str(name)
    if Path(text).expanduser().exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        return name
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
