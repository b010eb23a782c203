"""EVA02 (Fang et al. 2024) through timm, an optional extra (`pip install 'fishertune[timm]'`)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.models.backbones.base import (
    CLIP_MEAN,
    CLIP_STD,
    Backbone,
    check_state_matches,
    register_backbone,
)


class _RopeBlock(nn.Module):
    """Runs a timm EVA block on a sequence that may hold more than the prefix and the patch tokens.

    EVA's attention rotates the last h*w tokens (the patches) by the rotary embedding and leaves the prefix
    tokens (cls) as they are. Tokens a tuner inserts between the prefix and the patches (VPT's prompts) get
    the identity rotation (sin 0, cos 1), like the prefix. The block is held outside the module tree (its
    parameters stay named `model.blocks.N.*`).
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        object.__setattr__(self, "layer", block)

    def forward(self, hidden: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        extra = 0 if rope is None else hidden.shape[1] - self.layer.attn.num_prefix_tokens - rope.shape[0]
        if extra > 0:
            sin, cos = rope.new_zeros(extra, rope.shape[1] // 2), rope.new_ones(extra, rope.shape[1] // 2)
            rope = torch.cat([torch.cat([sin, cos], dim=1), rope])
        return self.layer(hidden, rope=rope)


@register_backbone
class Eva02Backbone(Backbone):
    """EVA02 (Fang et al. 2024) through timm's `Eva`, an optional extra (`pip install 'fishertune[timm]'`).

    `config` holds `model_name` (a timm architecture, default "eva02_base_patch14_224") and timm keyword
    arguments on top of it. `weights` is None (random init), a .safetensors file holding a timm EVA02 state
    dict (or the original BAAI one, which timm's `checkpoint_filter_fn` renames) for the architecture of
    `config`, or a timm pretrained name ("eva02_large_patch14_448.mim_m38m", "hf-hub:timm/...") that names
    architecture and weights together. Images are normalised with CLIP's mean/std, as EVA02 was pretrained.
    Blocks take the rotary embedding as `rope` (see `_RopeBlock`).
    """

    name = "eva02"
    mean = CLIP_MEAN
    std = CLIP_STD
    tiny_config = dict(model_name="eva02_tiny_patch14_224", embed_dim=32, depth=4, num_heads=2, patch_size=4,
                       img_size=32)
    # Modules after the blocks (final norm, pooling, classifier): removed, their checkpoint entries ignored.
    HEAD_MODULES = ("norm", "fc_norm", "attn_pool", "head")

    @classmethod
    def build(cls, weights=None, config=None, out_indices=None) -> Backbone:
        try:  # optional dependency: timm, the extra `fishertune[timm]`
            import timm
        except ImportError:
            raise FisherTuneError("backbone 'eva02' needs timm: install the timm extra "
                                  "(pip install 'fishertune[timm]')") from None
        kwargs = dict(config or {})
        name = kwargs.pop("model_name", "eva02_base_patch14_224")
        kwargs.setdefault("dynamic_img_size", True)
        text = None if weights is None else str(weights)
        is_file = text is not None and (text.endswith(".safetensors") or Path(text).expanduser().exists()
                                        or text.startswith(("/", ".", "~")))
        if is_file and not text.endswith(".safetensors"):
            raise FisherTuneError(f"eva02 weights {text}: expected a .safetensors file in timm's key layout "
                                  "or a timm pretrained name")
        if is_file and not Path(text).expanduser().is_file():
            raise FisherTuneError(f"weights file not found: {text}")
        pretrained = text is not None and not is_file
        source = text if pretrained else name
        try:
            model = timm.create_model(source, pretrained=pretrained, num_classes=0, **kwargs)
        except (OSError, RuntimeError, TypeError, ValueError) as err:
            raise FisherTuneError(f"could not build eva02 {source!r}: {str(err).strip().splitlines()[0]}") \
                from None
        if not isinstance(model, timm.models.eva.Eva) or model.rope_mixed:
            raise FisherTuneError(f"eva02: {source!r} is not a timm Eva model with one rotary embedding for "
                                  "all blocks")
        for module in cls.HEAD_MODULES:
            if getattr(model, module, None) is not None:
                setattr(model, module, nn.Identity())
        for block in model.blocks:
            # A fused q/k/v projection with biases runs as F.linear on its weight, past the nn.Linear; adding
            # the biases after the module (the same sum) lets LoRA and hooks on the projection see it.
            if getattr(block.attn, "qkv", None) is not None and hasattr(block.attn, "qkv_bias_separate"):
                block.attn.qkv_bias_separate = True
        if is_file:
            load_timm_state(model, Path(text).expanduser(), name, cls.HEAD_MODULES)
        return cls(model, model.embed_dim, model.patch_embed.patch_size[0], model.num_prefix_tokens,
                   out_indices)

    @property
    def blocks(self) -> nn.ModuleList:
        if "rope_blocks" not in self._modules:  # registered on first use, so hooks and names reach them
            self.rope_blocks = nn.ModuleList(_RopeBlock(block) for block in self.model.blocks)
        return self.rope_blocks

    def embed(self, x):
        tokens = self.model.patch_embed(x)
        tokens, rope = self.model._pos_embed(tokens)
        return self.model.norm_pre(tokens), {"rope": rope}


def load_timm_state(model: nn.Module, path: Path, name: str, head_modules: tuple[str, ...]) -> None:
    """Load a timm EVA state dict from safetensors into `model`, whose head modules were removed.

    timm's `checkpoint_filter_fn` renames the original BAAI keys and resamples position and patch
    embeddings to the model's grid; entries of the head modules are dropped; any other difference in keys
    or shapes is refused, naming the first ones.
    """
    from timm.models.eva import checkpoint_filter_fn  # optional dependency: timm (the timm extra)

    state = checkpoint_filter_fn(load_file(str(path)), model)
    state = {k: v for k, v in state.items() if k.split(".")[0] not in head_modules}
    check_state_matches(model.state_dict(), state, str(path), f"eva02 {name!r}",
                        " (the architecture is backbone_config: model_name and timm keyword arguments)")
    model.load_state_dict(state)
