"""The backbone interface, its registry and the helpers every family shares.

Every backbone embeds the image into tokens (prefix tokens first: cls, then registers), runs its transformer
`blocks` one by one and returns the hidden states of the blocks in `out_indices` as NCHW maps of stride
`patch_size`. Position embeddings are resampled (bicubic) to the input's patch grid, so any crop whose sides
are multiples of the patch size works. Input must already be normalised with the backbone's `mean`/`std`.

The wrapped model is `backbone.model`; parameter names are the model's own (`model.<hf name>`), so masks
and deltas keyed by name survive across runs. Modules the features never pass through (final norms, SAM's
neck, DINOv2's mask token) are removed from the wrapped model: every remaining parameter gets a gradient
(DDP runs without `find_unused_parameters`, and the Fisher is not padded with structural zeros).

The families register themselves in `BACKBONES` when their modules are imported (`fishertune.models.backbones`
imports them all).
"""

from __future__ import annotations

import fnmatch
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

from fishertune.errors import FisherTuneError, InputError, UsageError
from fishertune.registry import Registry
from fishertune.validation import suggest

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
        """(config class, model class), imported lazily: transformers' model modules take seconds to import,
        and importing the registry (config checks, `list_backbones`) must not pay for them."""
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
    # heavy dependency: transformers (about a second) is imported when a model loads, not with the registry
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


def tiny_vit_config(**extra: Any) -> dict[str, Any]:
    """The tiny ViT of the families' `tiny_config`: hidden 32, 4 blocks, 2 heads, patch 4, 32 px."""
    return dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, patch_size=4, image_size=32,
                **extra)


def tiny_backbone_config(name: str) -> dict[str, Any]:
    """A tiny random config for a registry name (hidden 32, 4 blocks, patch 4): fast tests of any family."""
    return dict(BACKBONES.lookup(name).tiny_config)


def list_backbones(pattern: str | None = None) -> list[str]:
    """The registered backbone names, sorted; with `pattern`, those matching it (shell-style, as fnmatch:
    "dinov2*", "*_reg"), like timm's `list_models`."""
    names = sorted(BACKBONES)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def build_backbone(name: str, weights: str | os.PathLike | None = None, config: dict | None = None,
                   out_indices: list[int] | None = None) -> Backbone:
    """Build a registered backbone: `weights` is a hub id, a save_pretrained folder, a .safetensors file or
    None (random init); `config` overrides fields of the family's config (tiny test models)."""
    from huggingface_hub.errors import StrictDataclassError  # transformers' checks of a config's values

    check_backbone_config(config or {})
    family = BACKBONES.lookup(name)
    try:
        return family.build(weights=weights, config=config, out_indices=out_indices)
    except (TypeError, ValueError, KeyError, AttributeError, StrictDataclassError) as error:
        if not config or isinstance(error, UsageError):  # only a value of backbone_config is named here
            raise
        reason = " ".join(str(error).split())  # transformers' messages span lines
        raise InputError(f"model.backbone_config does not build a {name} backbone: "
                         f"{type(error).__name__}: {reason}") from None


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
