"""SAM's image encoder (Kirillov et al. 2023), via transformers."""

from __future__ import annotations

import torch
from torch import nn

from fishertune.models.backbones.base import Backbone, HFBackbone, register_backbone, resample_grid


class _TokenGridBlock(nn.Module):
    """Runs a SAM layer (which takes [B, h, w, D]) on tokens [B, h*w, D]; the grid is set per forward.

    The SAM layer is held outside the module tree (its parameters stay named `model.vision_encoder.*`).
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        object.__setattr__(self, "layer", layer)
        self.grid = (0, 0)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.layer(hidden.reshape(hidden.shape[0], *self.grid, -1))
        out = out[0] if isinstance(out, tuple) else out
        return out.flatten(1, 2)


@register_backbone
class SamBackbone(HFBackbone):
    """SAM's image encoder via `transformers.SamVisionModel` (hub ids like "facebook/sam-vit-base").

    SAM's absolute position grid (64x64 for 1024 px) is resampled bicubically to the input's grid; windowed
    layers pad to the window size and global layers interpolate their relative positions (HF does that), so
    any multiple of the patch size works. No prefix tokens. `blocks` are thin wrappers (`grid_blocks.N`)
    that fold tokens into SAM's [B, h, w, D] layout, so they keep the common [B, T, D] interface and hooks
    on them see tokens; they own no parameters (replace a layer through `backbone.model`, not `blocks`).
    """

    name = "sam"
    tiny_config = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_dim=64, patch_size=4,
                       image_size=32, window_size=2, global_attn_indexes=[1, 3], output_channels=16)

    @classmethod
    def hf_classes(cls):
        # heavy dependency: transformers' model modules take seconds to import (see HFBackbone.hf_classes)
        from transformers import SamVisionConfig, SamVisionModel

        return SamVisionConfig, SamVisionModel

    @classmethod
    def build(cls, weights=None, config=None, out_indices=None) -> Backbone:
        # SamVisionConfig's initializer_range defaults to 1e-10, which leaves a random SAM with weights so
        # small that features (~1e-9) and Adam steps vanish below float resolution; use ViT's usual 0.02.
        if weights is None:
            config = {"initializer_range": 0.02, **(config or {})}
        return super().build(weights, config, out_indices)

    @classmethod
    def from_model(cls, model, out_indices=None) -> Backbone:
        model.vision_encoder.neck = nn.Identity()
        cfg = model.config
        return cls(model, cfg.hidden_size, cfg.patch_size, 0, out_indices)

    @property
    def blocks(self) -> nn.ModuleList:
        if "grid_blocks" not in self._modules:  # registered on first use, so hooks and names reach them
            layers = self.model.vision_encoder.layers
            self.grid_blocks = nn.ModuleList(_TokenGridBlock(layer) for layer in layers)
        return self.grid_blocks

    def embed(self, x):
        encoder = self.model.vision_encoder
        tokens = encoder.patch_embed.projection(x).permute(0, 2, 3, 1)
        if encoder.pos_embed is not None:
            tokens = tokens + resample_grid(encoder.pos_embed, tuple(tokens.shape[1:3]))
        for block in self.blocks:
            block.grid = tuple(tokens.shape[1:3])
        return tokens.flatten(1, 2), {}
