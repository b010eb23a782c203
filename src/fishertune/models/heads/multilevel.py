"""Multi-level head: UPerNet's FPN fusion (Xiao et al. 2018, without the pyramid-pooling module) over the
ViT feature pyramid: every fused level is upsampled to the finest (stride p/4), concatenated, fused by a 3x3
conv and classified by a 1x1 conv."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fishertune.label_space import NUM_CLASSES
from fishertune.models.heads.base import DecodeHead, register_head
from fishertune.models.heads.pyramid import FeaturePyramid, conv_norm_act


@register_head
class MultiLevelHead(DecodeHead):
    name = "multilevel"
    tiny_config = {"channels": 16}

    def __init__(self, in_channels: int, num_levels: int, num_classes: int = NUM_CLASSES, channels: int = 256,
                 scales: tuple[float, ...] | None = None, dropout: float = 0.1):
        super().__init__(in_channels, num_levels, num_classes)
        self.pyramid = FeaturePyramid(in_channels, num_levels, channels, scales)
        self.fuse = conv_norm_act(channels * num_levels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        levels = self.pyramid(features)
        size = levels[0].shape[-2:]
        stacked = [levels[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                                 for x in levels[1:]]
        return self.classifier(self.dropout(self.fuse(torch.cat(stacked, dim=1))))
