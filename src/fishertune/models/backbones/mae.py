"""The ViT-MAE encoder (He et al. 2022), via transformers, without MAE's random masking."""

from __future__ import annotations

import math

import torch
from torch import nn

from fishertune.models.backbones.base import (
    Backbone,
    HFBackbone,
    register_backbone,
    resample_grid,
    tiny_vit_config,
)


@register_backbone
class MaeBackbone(HFBackbone):
    """ViT-MAE encoder via `transformers.ViTMAEModel`, with NO random masking or token shuffling.

    HF's embedding always shuffles tokens (even at mask_ratio 0), so the tokens are built here: patch
    projection + (interpolated) sin-cos position embedding, cls token first.
    """

    name = "mae"
    tiny_config = tiny_vit_config(intermediate_size=64)

    @classmethod
    def hf_classes(cls):
        # heavy dependency: transformers' model modules take seconds to import (see HFBackbone.hf_classes)
        from transformers import ViTMAEConfig, ViTMAEModel

        return ViTMAEConfig, ViTMAEModel

    @classmethod
    def from_model(cls, model, out_indices=None) -> Backbone:
        model.layernorm = nn.Identity()
        cfg = model.config
        return cls(model, cfg.hidden_size, cfg.patch_size, 1, out_indices)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    def embed(self, x):
        emb = self.model.embeddings
        patches = emb.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
        pos = emb.position_embeddings
        side = math.isqrt(pos.shape[1] - 1)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        patch_pos = resample_grid(pos[:, 1:].reshape(1, side, side, -1), grid).flatten(1, 2)
        cls_token = (emb.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls_token, patches + patch_pos], dim=1), {}
