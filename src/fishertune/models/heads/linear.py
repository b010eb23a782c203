"""Linear head: BatchNorm + 1x1 convolution on the concatenated feature levels (the DINOv2 linear probe)."""

from __future__ import annotations

import torch
from torch import nn

from fishertune.errors import InputError
from fishertune.label_space import NUM_CLASSES
from fishertune.models.heads.base import DecodeHead, register_head


@register_head
class LinearHead(DecodeHead):
    """logits = Conv1x1(BN(concat(levels))) at the backbone's stride; `use_levels="last"` keeps one level."""

    name = "linear"

    def __init__(self, in_channels: int, num_levels: int, num_classes: int = NUM_CLASSES,
                 use_levels: str = "all"):
        super().__init__(in_channels, num_levels, num_classes)
        if use_levels not in ("all", "last"):
            raise InputError(f"model.head_options.use_levels must be 'all' or 'last', got {use_levels!r}")
        self.use_levels = use_levels
        channels = in_channels * (num_levels if use_levels == "all" else 1)
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, dim=1) if self.use_levels == "all" else features[-1]
        return self.classifier(self.norm(x))
