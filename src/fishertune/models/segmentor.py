"""Segmentor = backbone + decode head, with normalisation, padding, losses and whole/sliding inference.

Precision is the caller's: the segmentor never enters autocast itself (the engine's `train.amp` /
`eval.amp` does, see docs/performance.md); only the returned inference scores are cast to float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.label_space import IGNORE_INDEX, NUM_CLASSES
from fishertune.models.backbones.base import Backbone, build_backbone
from fishertune.models.heads import DecodeHead, build_head, check_head_options


def pad_to(x: torch.Tensor, height: int, width: int, value: float = 0.0) -> torch.Tensor:
    """Pad the last two dims at the bottom/right up to (height, width)."""
    return F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]), value=value)


class Segmentor(nn.Module):
    """Images in [0, 1] -> class scores. Parameters: `backbone.model.*` (the VFM) and `head.*`.

    Images are normalised with the backbone's mean/std, then zero-padded (bottom/right, i.e. with the
    mean colour) to a multiple of the patch size; labels are padded with 255 to match, and predictions are
    cropped back to the input size.
    """

    def __init__(self, backbone: Backbone, head: DecodeHead, num_classes: int = NUM_CLASSES):
        super().__init__()
        if head.num_classes != num_classes:
            raise FisherTuneError(f"head predicts {head.num_classes} classes, the segmentor {num_classes}")
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.register_buffer("pixel_mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)

    # -- internals -----------------------------------------------------------------------------------
    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.pixel_mean) / self.pixel_std

    def _padded_size(self, height: int, width: int) -> tuple[int, int]:
        p = self.backbone.patch_size
        return -(-height // p) * p, -(-width // p) * p

    def _head_output(self, normalised: torch.Tensor) -> Any:
        """Head output for normalised images already padded to a multiple of the patch size."""
        return self.head(self.backbone(normalised))

    def _logits_at_input(self, normalised: torch.Tensor) -> torch.Tensor:
        """Float32 scores [B, C, H, W] for normalised images of any size."""
        height, width = normalised.shape[-2:]
        padded = self._padded_size(height, width)
        output = self._head_output(pad_to(normalised, *padded))
        logits = self.head.logits(output).float()
        logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        return logits[..., :height, :width]

    # -- public API ----------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores [B, C, h, w] at the head's resolution over the patch-padded image (training-time view).

        Pixel heads give logits; Mask2Former gives softmax(class)[..., :-1] ⊗ sigmoid(mask) scores.
        """
        normalised = self.normalise(images)
        output = self._head_output(pad_to(normalised, *self._padded_size(*images.shape[-2:])))
        return self.head.logits(output)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The head's training loss; reduction="none" gives one value per image ([B], float32)."""
        padded = self._padded_size(*images.shape[-2:])
        output = self._head_output(pad_to(self.normalise(images), *padded))
        return self.head.loss(output, pad_to(labels, *padded, value=IGNORE_INDEX), reduction)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, mode: str = "whole", crop: int = 512, stride: int = 341,
                window_batch: int = 1, flip: bool = False) -> torch.Tensor:
        """Scores [B, C, H, W] at input size: one pass ("whole") or overlapping crops averaged ("slide").

        window_batch: sliding windows per forward pass (each pass holds window_batch × B crops); the
        result equals one window at a time up to float rounding. flip: test-time augmentation, the mean
        of the scores of the image and of its mirror image (flipped back), computed in the same pass.
        """
        if window_batch < 1:
            raise FisherTuneError(f"window_batch must be >= 1, got {window_batch}")
        normalised = self.normalise(images)
        if mode == "whole":
            return self._scores(normalised, flip)
        if mode == "slide":
            return self._slide(normalised, crop, stride, window_batch, flip)
        raise FisherTuneError(f"unknown inference mode {mode!r}; available: slide, whole")

    def _scores(self, normalised: torch.Tensor, flip: bool) -> torch.Tensor:
        """Scores at input size, averaged with those of the mirrored images (flipped back) when `flip`."""
        if not flip:
            return self._logits_at_input(normalised)
        both = self._logits_at_input(torch.cat([normalised, normalised.flip(-1)]))
        plain, mirrored = both.chunk(2)
        return (plain + mirrored.flip(-1)) / 2

    def _slide(self, normalised: torch.Tensor, crop: int, stride: int, window_batch: int = 1,
               flip: bool = False) -> torch.Tensor:
        """Average the scores of crop x crop windows placed every `stride` px (the last flush with the edge),
        `window_batch` windows per forward pass.

        Images smaller than the crop are padded up to it (zeros = mean colour) and the result is cropped back.
        """
        if not 0 < stride <= crop:
            raise FisherTuneError(f"sliding window needs 0 < stride <= crop (crop {crop}, stride {stride})")
        height, width = normalised.shape[-2:]
        x = pad_to(normalised, max(height, crop), max(width, crop))
        full_h, full_w = x.shape[-2:]
        scores = x.new_zeros(x.shape[0], self.num_classes, full_h, full_w)
        counts = x.new_zeros(1, 1, full_h, full_w)
        rows = -(-(full_h - crop) // stride) + 1
        cols = -(-(full_w - crop) // stride) + 1
        corners = [(min(r * stride, full_h - crop), min(c * stride, full_w - crop))
                   for r in range(rows) for c in range(cols)]
        for first in range(0, len(corners), window_batch):
            group = corners[first:first + window_batch]
            windows = torch.cat([x[..., top:top + crop, left:left + crop] for top, left in group])
            for (top, left), window_scores in zip(group, self._scores(windows, flip).split(x.shape[0])):
                scores[..., top:top + crop, left:left + crop] += window_scores
                counts[..., top:top + crop, left:left + crop] += 1
        return (scores / counts)[..., :height, :width]


def build_segmentor(backbone: str | dict, head: str | dict, num_classes: int = NUM_CLASSES) -> Segmentor:
    """Build from names or dicts: backbone {"name", "weights", "config", "out_indices"}, head {"name", ...}.

    The head's `in_channels` and `num_levels` come from the backbone.
    """
    spec = {"name": backbone} if isinstance(backbone, str) else dict(backbone)
    head_spec = {"name": head} if isinstance(head, str) else dict(head)
    if "name" not in spec or "name" not in head_spec:
        raise FisherTuneError("backbone and head specs need a 'name'")
    unknown = sorted(set(spec) - {"name", "weights", "config", "out_indices"})
    if unknown:
        raise FisherTuneError(f"unknown backbone option {unknown[0]!r}; available: config, name, "
                              "out_indices, weights")
    head_name = head_spec.pop("name")
    check_head_options(head_name, head_spec)  # before the backbone is built
    return assemble_segmentor(build_backbone(spec.pop("name"), **spec), head_name, num_classes, **head_spec)


def assemble_segmentor(backbone: Backbone, head: str, num_classes: int = NUM_CLASSES,
                       **head_options: Any) -> Segmentor:
    """A built backbone with a fresh head `head` fitted to it (its `in_channels` and `num_levels` come from
    the backbone); `head_options` are the head's own keyword options."""
    decode = build_head(head, backbone.embed_dim, len(backbone.out_indices), num_classes, **head_options)
    return Segmentor(backbone, decode, num_classes)
