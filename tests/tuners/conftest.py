"""Tiny segmentors for the tuner tests (stand-in until fishertune.models lands)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Dinov2Config, Dinov2Model

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=4,
            image_size=32)


class StandInBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = Dinov2Model(Dinov2Config(**TINY))
        self.embed_dim, self.patch_size, self.num_prefix_tokens = 32, 4, 1

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def forward(self, x):
        tokens = self.model(pixel_values=x).last_hidden_state[:, self.num_prefix_tokens:]
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return [tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)]


class StandInSegmentor(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = StandInBackbone()
        self.head = nn.Conv2d(32, 19, 1)

    def forward(self, images):
        return self.head(self.backbone(images)[-1])

    def loss(self, images, labels, reduction="mean"):
        logits = F.interpolate(self(images), size=labels.shape[-2:], mode="bilinear")
        loss = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
        valid = (labels != 255).flatten(1).sum(1).clamp(min=1)
        per_image = loss.flatten(1).sum(1) / valid
        return per_image if reduction == "none" else per_image.mean()


def make_segmentor(family: str = "dinov2", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return StandInSegmentor()


@pytest.fixture
def batches():
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(2, 3, 32, 32, generator=g),
             "label": torch.randint(0, 19, (2, 32, 32), generator=g)} for _ in range(2)]


def segmentation_loss(model, batch):
    return model.loss(batch["image"], batch["label"], reduction="none")
