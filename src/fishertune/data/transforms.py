"""The training transform and its parts on tensors: ``transform(image, label, generator) -> (image, label)``.

``image`` is float [3, H, W] in [0, 1] and ``label`` int64 [H, W] train ids. All randomness comes from the
``torch.Generator`` passed in (the dataset seeds one per item and epoch), so a run is reproducible and
resumable. Images are resampled bilinearly (antialiased when shrinking); labels with ``nearest-exact``,
which samples at pixel centres as bilinear ``align_corners=False`` does, so the two stay aligned.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fishertune.data.labels import IGNORE_INDEX

# RGB -> YIQ; hue is a rotation of the (I, Q) chroma plane
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def resize(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]):
    """Resize image (bilinear, antialiased) and label (nearest-exact) to ``size`` = (height, width)."""
    shrinking = size[0] < image.shape[1] or size[1] < image.shape[2]
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                          antialias=shrinking)[0].clamp_(0, 1)
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return image, label


def adjust_colour(image: torch.Tensor, brightness: float = 0.0, contrast: float = 1.0,
                  saturation: float = 1.0, hue: float = 0.0) -> torch.Tensor:
    """Add ``brightness``; scale contrast about the mean grey and saturation about each pixel's grey;
    rotate hue by ``hue`` radians in YIQ. Clamped to [0, 1]."""
    image = image + brightness
    grey = image.mean(dim=0, keepdim=True)
    image = (image - grey.mean()) * contrast + grey.mean()
    grey = (image * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
    image = grey + (image - grey) * saturation
    if hue:
        c, s = torch.cos(torch.tensor(hue)), torch.sin(torch.tensor(hue))
        rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
        matrix = torch.linalg.inv(_RGB_TO_YIQ) @ rotation @ _RGB_TO_YIQ
        image = torch.einsum("ij,jhw->ihw", matrix, image)
    return image.clamp_(0, 1)


class TrainTransform:
    """Random scale, random crop (padding image 0 / label 255 when smaller), horizontal flip and optional
    photometric jitter, in the spirit of mmsegmentation's RandomResize + RandomCrop + RandomFlip +
    PhotoMetricDistortion.

    Args:
        crop_size: output (height, width), or one int for a square.
        scale_range: the image is resized by a factor drawn uniformly from this range, after first
            resizing its short side to ``base_short_side`` when that is given.
        flip_prob: probability of a horizontal flip.
        jitter: photometric strength in [0, 1]; 0 disables. At 1: brightness ±32/255, contrast and
            saturation ×[0.5, 1.5], hue ±18°.
    """

    def __init__(self, crop_size: int | Sequence[int], scale_range: tuple[float, float] = (0.5, 2.0),
                 base_short_side: int | None = None, flip_prob: float = 0.5, jitter: float = 0.0):
        self.crop_size = _pair(crop_size)
        self.scale_range = scale_range
        self.base_short_side = base_short_side
        self.flip_prob = flip_prob
        self.jitter = jitter

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator):
        height, width = image.shape[1:]
        base = self.base_short_side / min(height, width) if self.base_short_side else 1.0
        factor = base * _uniform(generator, *self.scale_range)
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        if size != (height, width):
            image, label = resize(image, label, size)
        image, label = self._crop(image, label, generator)
        if torch.rand((), generator=generator).item() < self.flip_prob:
            image, label = image.flip(-1), label.flip(-1)
        if self.jitter > 0:
            s = self.jitter
            image = adjust_colour(image, brightness=_uniform(generator, -32 / 255 * s, 32 / 255 * s),
                                  contrast=_uniform(generator, 1 - 0.5 * s, 1 + 0.5 * s),
                                  saturation=_uniform(generator, 1 - 0.5 * s, 1 + 0.5 * s),
                                  hue=_uniform(generator, -0.1 * torch.pi * s, 0.1 * torch.pi * s))
        return image, label

    def _crop(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator):
        crop_h, crop_w = self.crop_size
        pad_h, pad_w = max(crop_h - image.shape[1], 0), max(crop_w - image.shape[2], 0)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(torch.randint(image.shape[1] - crop_h + 1, (), generator=generator))
        left = int(torch.randint(image.shape[2] - crop_w + 1, (), generator=generator))
        return image[:, top:top + crop_h, left:left + crop_w], label[top:top + crop_h, left:left + crop_w]
