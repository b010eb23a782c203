"""CLIP's vision tower (Radford et al. 2021), via transformers."""

from __future__ import annotations

from torch import nn

from fishertune.models.backbones.base import (
    CLIP_MEAN,
    CLIP_STD,
    Backbone,
    HFBackbone,
    register_backbone,
    tiny_vit_config,
)


@register_backbone
class ClipBackbone(HFBackbone):
    """CLIP's vision tower via `transformers.CLIPVisionModel` (pre-LN applied; CLIP's own mean/std)."""

    name = "clip"
    mean = CLIP_MEAN
    std = CLIP_STD
    tiny_config = tiny_vit_config(intermediate_size=64)

    @classmethod
    def hf_classes(cls):
        # heavy dependency: transformers' model modules take seconds to import (see HFBackbone.hf_classes)
        from transformers import CLIPVisionConfig, CLIPVisionModel

        return CLIPVisionConfig, CLIPVisionModel

    @classmethod
    def from_model(cls, model, out_indices=None) -> Backbone:
        model.post_layernorm = nn.Identity()
        cfg = model.config
        return cls(model, cfg.hidden_size, cfg.patch_size, 1, out_indices)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def embed(self, x):
        tokens = self.model.embeddings(x, interpolate_pos_encoding=True)
        return self.model.pre_layrnorm(tokens), {"attention_mask": None}
