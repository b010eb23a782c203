"""A light feature pyramid from single-stride ViT features (ViTDet, Li et al. 2022) with FPN top-down fusion.

Level i is rescaled by `scales[i]` (4: two stride-2 transposed convs, 2: one, 1: identity, 0.5: max-pool),
projected to `channels`, then fused top-down: P_i = lateral_i + upsample(P_{i+1}), smoothed by a 3x3 conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fishertune.errors import InputError
from fishertune.models.heads.base import group_norm

DEFAULT_SCALES = (4.0, 2.0, 1.0, 0.5)


def conv_norm_act(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), group_norm(cout),
                         nn.GELU())


def _rescale(channels: int, scale: float) -> nn.Module:
    if scale == 4:
        return nn.Sequential(nn.ConvTranspose2d(channels, channels, 2, stride=2), group_norm(channels),
                             nn.GELU(), nn.ConvTranspose2d(channels, channels, 2, stride=2))
    if scale == 2:
        return nn.ConvTranspose2d(channels, channels, 2, stride=2)
    if scale == 1:
        return nn.Identity()
    if scale == 0.5:
        return nn.MaxPool2d(2, ceil_mode=True)
    raise InputError(f"pyramid scales must be among 4, 2, 1, 0.5; got {scale}")


class FeaturePyramid(nn.Module):
    """Levels [B, in_channels, h, w] -> list of [B, channels, h·s_i, w·s_i], fine to coarse."""

    def __init__(self, in_channels: int, num_levels: int, channels: int,
                 scales: tuple[float, ...] | None = None):
        super().__init__()
        scales = tuple(DEFAULT_SCALES[:num_levels] if scales is None else scales)
        if len(scales) != num_levels:
            raise InputError(f"{num_levels} feature levels need {num_levels} scales, got {scales}")
        if list(scales) != sorted(scales, reverse=True):
            raise InputError(f"pyramid scales must go from fine to coarse, got {scales}")
        self.scales = scales
        self.rescale = nn.ModuleList(_rescale(in_channels, s) for s in scales)
        self.lateral = nn.ModuleList(conv_norm_act(in_channels, channels, 1) for _ in scales)
        self.smooth = nn.ModuleList(conv_norm_act(channels, channels, 3) for _ in scales)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [lat(res(f)) for f, res, lat in zip(features, self.rescale, self.lateral)]
        for i in range(len(laterals) - 2, -1, -1):
            laterals[i] = laterals[i] + F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:],
                                                      mode="bilinear", align_corners=False)
        return [smooth(x) for smooth, x in zip(self.smooth, laterals)]
