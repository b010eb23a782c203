"""The decode-head interface and registry: features from the backbone in, class scores and a loss out."""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
from torch import nn

from fishertune.errors import InputError
from fishertune.label_space import NUM_CLASSES
from fishertune.models.losses import pixel_cross_entropy
from fishertune.registry import Registry
from fishertune.validation import suggest

HEADS: Registry[type[DecodeHead]] = Registry("head")
register_head = HEADS.register
"""Class decorator: makes a head buildable by its `name`."""


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups: batch-independent, so per-sample losses (the Fisher) stay so."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class DecodeHead(nn.Module):
    """`forward(features) -> output`, `logits(output) -> [B, C, h, w]`, `loss(output, labels, reduction)`.

    Pixel heads output logits directly and train with pixel cross-entropy; subclasses may output richer
    structures (Mask2Former: class and mask logits per query).
    """

    name: ClassVar[str] = ""
    tiny_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, in_channels: int, num_levels: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.in_channels = in_channels
        self.num_levels = num_levels
        self.num_classes = num_classes

    def logits(self, output: Any) -> torch.Tensor:
        return output

    def loss(self, output: Any, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return pixel_cross_entropy(self.logits(output), labels, reduction)


def tiny_head_config(name: str) -> dict[str, Any]:
    """Options that make a registered head tiny (few channels / queries / layers) for fast tests."""
    return dict(HEADS.lookup(name).tiny_config)


def build_head(name: str, in_channels: int, num_levels: int, num_classes: int = NUM_CLASSES,
               **kw: Any) -> DecodeHead:
    """Build a registered head ("linear", "multilevel", "mask2former"); `kw` are the head's own options."""
    head_class = HEADS.lookup(name)
    valid = [p for p in inspect.signature(head_class.__init__).parameters
             if p not in ("self", "in_channels", "num_levels", "num_classes")]
    for key in kw:
        if key not in valid:
            raise InputError(f"unknown option model.head_options.{key} for head {name!r}"
                             f"{suggest(key, valid, 'model.head_options')}")
    return head_class(in_channels, num_levels, num_classes, **kw)
