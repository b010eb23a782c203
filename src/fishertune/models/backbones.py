"""Vision Foundation Model backbones behind one interface, built on `transformers` (timm for EVA02).

Every backbone embeds the image into tokens (prefix tokens first: cls, then registers), runs its transformer
`blocks` one by one and returns the hidden states of the blocks in `out_indices` as NCHW maps of stride
`patch_size`. Position embeddings are resampled (bicubic) to the input's patch grid, so any crop whose sides
are multiples of the patch size works. Input must already be normalised with the backbone's `mean`/`std`.

The wrapped model is `backbone.model`; parameter names are the model's own (`model.<hf name>`), so masks
and deltas keyed by name survive across runs. Modules the features never pass through (final norms, SAM's
neck, DINOv2's mask token) are removed from the wrapped model: every remaining parameter gets a gradient
(DDP runs without `find_unused_parameters`, and the Fisher is not padded with structural zeros).
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from fishertune.errors import FisherTuneError, InputError
from fishertune.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

BACKBONES: Registry[type[Backbone]] = Registry("backbone")
register_backbone = BACKBONES.register
"""Class decorator: makes a backbone family buildable by its `name`."""


def default_out_indices(num_blocks: int, num_levels: int = 4) -> list[int]:
    """The last block of each quarter of the network: [2, 5, 8, 11] for 12 blocks (repeats when shallower)."""
    return [math.ceil((k + 1) * num_blocks / num_levels) - 1 for k in range(num_levels)]


def resample_grid(pos: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resampling of a [1, h, w, D] position grid to `size`, in float32 (bf16 bicubic drifts)."""
    if tuple(pos.shape[1:3]) == tuple(size):
        return pos
    out = F.interpolate(pos.permute(0, 3, 1, 2).float(), size=size, mode="bicubic", align_corners=False)
    return out.to(pos.dtype).permute(0, 2, 3, 1)


class Backbone(nn.Module):
    """A ViT returning `len(out_indices)` feature maps [B, embed_dim, H/p, W/p] from the chosen blocks.

    Subclasses provide `build` (weights/config -> backbone), `blocks` (the transformer layers, each called as
    `block(hidden [B, T, D], **block_kwargs)`), and `embed` (image -> tokens, block kwargs).

    activation_checkpointing: in training mode with autograd on, each block runs under
    `torch.utils.checkpoint` (non-reentrant): its activations are recomputed in the backward pass instead of
    kept, so activation memory holds one block's internals plus the blocks' outputs. Gradients are
    unchanged; the forward pass runs twice. Eval-mode passes (inference, Fisher estimation) never
    checkpoint.
    """

    activation_checkpointing: bool = False

    name: ClassVar[str] = ""
    default_weights: ClassVar[tuple[str, str] | None] = None
    """(description, licence) of the weights loaded when none are given; None = random initialisation."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    tiny_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, embed_dim: int, patch_size: int, num_prefix_tokens: int,
                 out_indices: list[int] | None = None):
        super().__init__()
        self.model = model
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.num_prefix_tokens = num_prefix_tokens
        n = len(self.blocks)
        indices = default_out_indices(n) if out_indices is None else list(out_indices)
        if not indices or any(not -n <= i < n for i in indices):
            raise FisherTuneError(f"out_indices {indices} out of range for a backbone with {n} blocks")
        self.out_indices = [i % n for i in indices]

    @property
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Tokens [B, prefix + h*w, D] with position embeddings, and the keyword arguments of every block."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        height, width = x.shape[-2:]
        p = self.patch_size
        if height % p or width % p:
            raise InputError(f"input {height}x{width} is not a multiple of the patch size {p}")
        grid = (height // p, width // p)
        hidden, block_kwargs = self.embed(x)
        wanted = set(self.out_indices)
        by_index = {}
        checkpointing = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if checkpointing:
                out = checkpoint(block, hidden, use_reentrant=False, **block_kwargs)
            else:
                out = block(hidden, **block_kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
            if i in wanted:
                by_index[i] = hidden
            if i == max(wanted):
                break
        return [self.tokens_to_map(by_index[i], grid) for i in self.out_indices]

    def tokens_to_map(self, hidden: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Drop the prefix tokens and fold the patch tokens into [B, D, h, w]."""
        patches = hidden[:, self.num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(hidden.shape[0], -1, *grid)

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def build(cls, weights: str | os.PathLike | None = None, config: dict | None = None,
              out_indices: list[int] | None = None) -> Backbone:
        raise NotImplementedError


class HFBackbone(Backbone):
    """A backbone wrapping a `transformers` model loaded from a hub id, folder or safetensors file."""

    @classmethod
    def hf_classes(cls) -> tuple[type, type]:
        """(config class, model class), imported lazily."""
        raise NotImplementedError

    @classmethod
    def build(cls, weights=None, config=None, out_indices=None) -> Backbone:
        return cls.from_model(load_hf_model(*cls.hf_classes(), weights, config), out_indices)

    @classmethod
    def from_model(cls, model: nn.Module, out_indices: list[int] | None = None) -> Backbone:
        """Wrap a loaded HF model (after removing the modules the features never use)."""
        raise NotImplementedError


ALLOW_TORCH_WEIGHTS = "FISHERTUNE_ALLOW_TORCH_WEIGHTS"
"""Environment variable: "1" lets a weights folder or hub id without safetensors load torch files
(.bin), which transformers reads with torch.load(weights_only=True). Unset, only safetensors load."""


def load_hf_model(config_class: type, model_class: type, weights: str | os.PathLike | None,
                  overrides: dict | None) -> nn.Module:
    """Random init (weights=None), a local `save_pretrained` folder, a .safetensors file, or a hub id.

    A .safetensors file uses `config.json` next to it when present, else the family's default config; the
    `overrides` are applied on top in every case.
    """
    overrides = dict(overrides or {})
    check_config_keys(config_class, overrides)
    if weights is None:
        return model_class(config_class(**overrides)).eval()
    path = Path(weights).expanduser()
    text = str(weights)
    if path.is_dir():
        return _from_pretrained(model_class, path, overrides)
    if text.endswith(".safetensors"):
        if not path.is_file():
            raise FisherTuneError(f"weights file not found: {text}")
        sidecar = path.with_name("config.json")
        cfg = config_class.from_json_file(sidecar) if sidecar.is_file() else config_class()
        for key, value in overrides.items():
            setattr(cfg, key, value)
        model = model_class(cfg)
        state = load_file(str(path))
        hint = "" if sidecar.is_file() else " (no config.json next to it, so the default config was used)"
        check_state_matches(model.state_dict(), state, text, model_class.__name__, hint)
        model.load_state_dict(state)
        return model.eval()
    if path.exists() or text.startswith(("/", ".", "~")):
        raise FisherTuneError(f"weights not found: {text} (expected a save_pretrained folder or a "
                              f".safetensors file)")
    return _from_pretrained(model_class, text, overrides)


def check_config_keys(config_class: type, overrides: dict) -> None:
    """Refuse a key of `model.backbone_config` that the family's transformers config does not have (the
    config would store it silently and nothing would read it)."""
    from fishertune.validation import suggest

    default = config_class()
    known = set(default.to_dict())
    for key in overrides:
        if key not in known and not hasattr(default, key) and not hasattr(default, f"_{key}"):
            raise InputError(f"unknown config key 'model.backbone_config.{key}' for {config_class.__name__}"
                             f"{suggest(key, sorted(known), 'model.backbone_config')}")


def check_state_matches(own: dict, state: dict, source: str, target: str, hint: str = "") -> None:
    """Refuse weights whose keys or shapes differ from the model's, naming the first differences."""
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise FisherTuneError(f"{source} does not match {target}: missing keys {missing[:3]}, "
                              f"unexpected keys {extra[:3]}{hint}")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise FisherTuneError(f"{source}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, {target} "
                              f"expects {tuple(own[bad[0]].shape)}{hint}")


def _from_pretrained(model_class: type, source: str | Path, overrides: dict) -> nn.Module:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight file would clutter the run's own progress
    allow_torch = os.environ.get(ALLOW_TORCH_WEIGHTS) == "1"
    if not allow_torch and Path(source).is_dir() and not any(Path(source).glob("*.safetensors")):
        raise InputError(f"{source} holds no .safetensors weights; FisherTune loads no pickled weights "
                         f"(.bin/.pth) unless {ALLOW_TORCH_WEIGHTS}=1 is set (then with torch.load's "
                         f"weights_only=True); convert them with save_pretrained(..., "
                         f"safe_serialization=True)")
    try:
        return model_class.from_pretrained(str(source), use_safetensors=None if allow_torch else True,
                                           **overrides).eval()
    except pickle.UnpicklingError:  # torch's advice in this error (weights_only=False) would run the code
        raise InputError(f"could not load {model_class.__name__} weights from {str(source)!r}: a pickled "
                         f"weights file there holds more than tensors, which torch.load(weights_only=True) "
                         f"refuses (nothing in it was run)") from None
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FisherTuneError(f"could not load {model_class.__name__} weights from {str(source)!r}: "
                              f"{first}") from None


# -- families -----------------------------------------------------------------------------------------
def _tiny(**extra: Any) -> dict[str, Any]:
    return dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, patch_size=4, image_size=32,
                **extra)


@register_backbone
class Dinov2Backbone(HFBackbone):
    """DINOv2 (Oquab et al. 2023) via `transformers.Dinov2Model`; hub ids like "facebook/dinov2-small", and
    Meta's own checkpoints (`dinov2_vitl14_pretrain.pth`, see `fishertune.models.dinov2_meta`)."""

    name = "dinov2"
    tiny_config = _tiny(mlp_ratio=2)

    @classmethod
    def hf_classes(cls):
        from transformers import Dinov2Config, Dinov2Model

        return Dinov2Config, Dinov2Model

    @classmethod
    def build(cls, weights=None, config=None, out_indices=None) -> Backbone:
        from fishertune.models.dinov2_meta import is_meta_checkpoint, load_meta_dinov2

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
    tiny_config = _tiny(mlp_ratio=2, num_register_tokens=2)

    @classmethod
    def hf_classes(cls):
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        return Dinov2WithRegistersConfig, Dinov2WithRegistersModel


@register_backbone
class ClipBackbone(HFBackbone):
    """CLIP's vision tower via `transformers.CLIPVisionModel` (pre-LN applied; CLIP's own mean/std)."""

    name = "clip"
    mean = CLIP_MEAN
    std = CLIP_STD
    tiny_config = _tiny(intermediate_size=64)

    @classmethod
    def hf_classes(cls):
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


@register_backbone
class MaeBackbone(HFBackbone):
    """ViT-MAE encoder via `transformers.ViTMAEModel`, with NO random masking or token shuffling.

    HF's embedding always shuffles tokens (even at mask_ratio 0), so the tokens are built here: patch
    projection + (interpolated) sin-cos position embedding, cls token first.
    """

    name = "mae"
    tiny_config = _tiny(intermediate_size=64)

    @classmethod
    def hf_classes(cls):
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
        try:
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
    from timm.models.eva import checkpoint_filter_fn

    state = checkpoint_filter_fn(load_file(str(path)), model)
    state = {k: v for k, v in state.items() if k.split(".")[0] not in head_modules}
    check_state_matches(model.state_dict(), state, str(path), f"eva02 {name!r}",
                        " (the architecture is backbone_config: model_name and timm keyword arguments)")
    model.load_state_dict(state)


def tiny_backbone_config(name: str) -> dict[str, Any]:
    """A tiny random config for a registry name (hidden 32, 4 blocks, patch 4): fast tests of any family."""
    return dict(BACKBONES.lookup(name).tiny_config)


def build_backbone(name: str, weights: str | os.PathLike | None = None, config: dict | None = None,
                   out_indices: list[int] | None = None) -> Backbone:
    """Build a registered backbone: `weights` is a hub id, a save_pretrained folder, a .safetensors file or
    None (random init); `config` overrides fields of the family's config (tiny test models)."""
    check_backbone_config(config or {})
    return BACKBONES.lookup(name).build(weights=weights, config=config, out_indices=out_indices)


POSITIVE_INT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                       "patch_size", "image_size", "num_register_tokens", "num_channels")
"""`model.backbone_config` fields that must be whole numbers >= 1 (num_register_tokens may be 0)."""


def check_backbone_config(config: dict) -> None:
    """One line naming the field, before any model is built, for sizes a transformer cannot have: a
    non-integer or non-positive size, a width not divisible by the heads, a patch larger than the image."""
    where = "model.backbone_config"
    for key in POSITIVE_INT_FIELDS:
        if key not in config:
            continue
        value, low = config[key], 0 if key == "num_register_tokens" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{where}.{key} must be a whole number >= {low}, got {value!r}")
    ratio = config.get("mlp_ratio")
    number = isinstance(ratio, int | float) and not isinstance(ratio, bool)
    if ratio is not None and not (number and ratio > 0):  # NaN too
        raise InputError(f"{where}.mlp_ratio must be a number > 0, got {ratio!r}")
    width, heads = config.get("hidden_size"), config.get("num_attention_heads")
    if width is not None and heads is not None and width % heads:
        raise InputError(f"{where}: hidden_size {width} is not divisible by num_attention_heads {heads}")
    patch, image = config.get("patch_size"), config.get("image_size")
    if patch is not None and image is not None and patch > image:
        raise InputError(f"{where}: patch_size {patch} is larger than image_size {image}")
