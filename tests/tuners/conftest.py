"""Tiny random segmentors (the project's real backbones and linear head) and data for the tuner tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fishertune.models import build_segmentor, tiny_backbone_config

FAMILIES = ["dinov2", "dinov2_reg", "clip", "mae", "sam"]


def make_segmentor(family: str = "dinov2", seed: int = 0, head: str | dict = "linear") -> nn.Module:
    """The same random weights for the same (family, seed): the "base model" a tuner reloads onto."""
    torch.manual_seed(seed)
    model = build_segmentor({"name": family, "config": tiny_backbone_config(family)}, head).eval()
    if family == "sam":
        # transformers' random SamVisionModel comes out with weights of ~1e-10 (features ~1e-9), under which
        # Adam's steps vanish below float resolution; give its matrices a usable scale.
        with torch.no_grad():
            for p in model.backbone.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.1)
    return model


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and do not fight other jobs on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def batches() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(2, 3, 32, 32, generator=g),
             "label": torch.randint(0, 19, (2, 32, 32), generator=g)} for _ in range(2)]


def segmentation_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return model.loss(batch["image"], batch["label"], reduction="none")
