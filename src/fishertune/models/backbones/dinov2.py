"""DINOv2 (Oquab et al. 2023) and DINOv2 with registers (Darcet et al. 2024), via transformers; Meta's own
`.pth` checkpoints are read by `fishertune.models.dinov2_meta`."""

from __future__ import annotations

from torch import nn

from fishertune.models.backbones.base import Backbone, HFBackbone, register_backbone, tiny_vit_config
from fishertune.models.dinov2_meta import is_meta_checkpoint, load_meta_dinov2


@register_backbone
class Dinov2Backbone(HFBackbone):
    """DINOv2 (Oquab et al. 2023) via `transformers.Dinov2Model`; hub ids like "facebook/dinov2-small", and
    Meta's own checkpoints (`dinov2_vitl14_pretrain.pth`, see `fishertune.models.dinov2_meta`)."""

    name = "dinov2"
    tiny_config = tiny_vit_config(mlp_ratio=2)

    @classmethod
    def hf_classes(cls):
        # heavy dependency: transformers' model modules take seconds to import (see HFBackbone.hf_classes)
        from transformers import Dinov2Config, Dinov2Model

        return Dinov2Config, Dinov2Model

    @classmethod
    def build(cls, weights=None, config=None, out_indices=None) -> Backbone:
        if is_meta_checkpoint(weights):
            return cls.from_model(load_meta_dinov2(weights, *cls.hf_classes(), config), out_indices)
        return super().build(weights, config, out_indices)

    @classmethod
    def from_model(cls, model, out_indices=None) -> Backbone:
        model.layernorm = nn.Identity()
        model.embeddings.mask_token = None
        cfg = model.config
        prefix = 1 + getattr(cfg, "num_register_tokens", 0)
        return cls(model, cfg.hidden_size, cfg.patch_size, prefix, out_indices)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def embed(self, x):
        return self.model.embeddings(x), {}


@register_backbone
class Dinov2RegistersBackbone(Dinov2Backbone):
    """DINOv2 with registers (Darcet et al. 2024); hub ids like "facebook/dinov2-with-registers-small", and
    Meta's `dinov2_vit*14_reg4_pretrain.pth`."""

    name = "dinov2_reg"
    tiny_config = tiny_vit_config(mlp_ratio=2, num_register_tokens=2)

    @classmethod
    def hf_classes(cls):
        # heavy dependency: transformers' model modules take seconds to import (see HFBackbone.hf_classes)
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        return Dinov2WithRegistersConfig, Dinov2WithRegistersModel
