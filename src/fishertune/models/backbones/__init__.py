"""Vision Foundation Model backbones behind one interface, built on `transformers` (timm for EVA02).

`base` holds the interface (`Backbone`), the registry (`BACKBONES`, `build_backbone`, `list_backbones`) and
the helpers the families share; each family is one module, registered when imported here: `dinov2`
(DINOv2, with and without registers), `clip`, `mae`, `sam`, `eva02` (the timm extra). The offline DINOv2-S
is `fishertune.models.offline_dinov2`, Meta's DINOv2 checkpoints `fishertune.models.dinov2_meta`.
"""

from fishertune.models.backbones.base import (
    ALLOW_TORCH_WEIGHTS,
    BACKBONES,
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    POSITIVE_INT_FIELDS,
    Backbone,
    HFBackbone,
    build_backbone,
    check_backbone_config,
    check_config_keys,
    check_state_matches,
    default_out_indices,
    list_backbones,
    load_hf_model,
    register_backbone,
    resample_grid,
    tiny_backbone_config,
    tiny_vit_config,
)
from fishertune.models.backbones.clip import ClipBackbone
from fishertune.models.backbones.dinov2 import Dinov2Backbone, Dinov2RegistersBackbone
from fishertune.models.backbones.eva02 import Eva02Backbone, load_timm_state
from fishertune.models.backbones.mae import MaeBackbone
from fishertune.models.backbones.sam import SamBackbone

__all__ = ["ALLOW_TORCH_WEIGHTS", "BACKBONES", "CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD",
           "POSITIVE_INT_FIELDS", "Backbone", "ClipBackbone", "Dinov2Backbone", "Dinov2RegistersBackbone",
           "Eva02Backbone", "HFBackbone", "MaeBackbone", "SamBackbone", "build_backbone",
           "check_backbone_config", "check_config_keys", "check_state_matches", "default_out_indices",
           "list_backbones", "load_hf_model", "load_timm_state", "register_backbone", "resample_grid",
           "tiny_backbone_config", "tiny_vit_config"]
