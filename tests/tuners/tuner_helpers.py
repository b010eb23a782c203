"""Tiny random segmentors (the project's real backbones and linear head) and the loss of the tuner tests."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from fishertune.models import build_segmentor, tiny_backbone_config

NEEDS_TIMM = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason="eva02 needs the timm extra (bash scripts/test_eva02.sh)")
FAMILIES = ["dinov2", "dinov2_reg", "clip", "mae", "sam", pytest.param("eva02", marks=NEEDS_TIMM)]


def make_segmentor(family: str = "dinov2", seed: int = 0, head: str | dict = "linear") -> nn.Module:
    """The same random weights for the same (family, seed): the "base model" a tuner reloads onto."""
    torch.manual_seed(seed)
    return build_segmentor({"name": family, "config": tiny_backbone_config(family)}, head).eval()


def segmentation_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return model.loss(batch["image"], batch["label"], reduction="none")


def make_batches() -> list[dict]:
    """Two seeded batches of two 32 px images with random train-id labels."""
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(2, 3, 32, 32, generator=g),
             "label": torch.randint(0, 19, (2, 32, 32), generator=g)} for _ in range(2)]
