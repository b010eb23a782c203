"""Segmentation models: VFM backbones, decode heads, the Segmentor, losses, the offline DINOv2-S."""

from fishertune.models import offline_dinov2  # noqa: F401  (registers "dinov2_s_offline")
from fishertune.models.backbones import (
    BACKBONES,
    Backbone,
    build_backbone,
    list_backbones,
    tiny_backbone_config,
)
from fishertune.models.heads import HEADS, DecodeHead, build_head, tiny_head_config
from fishertune.models.losses import MaskClassificationLoss, pixel_cross_entropy
from fishertune.models.segmentor import Segmentor, build_segmentor

__all__ = ["BACKBONES", "HEADS", "Backbone", "DecodeHead", "MaskClassificationLoss", "Segmentor",
           "build_backbone", "build_head", "build_segmentor", "list_backbones", "pixel_cross_entropy",
           "tiny_backbone_config", "tiny_head_config"]
