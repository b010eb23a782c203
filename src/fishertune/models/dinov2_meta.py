"""Meta's DINOv2 checkpoints (`dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`) as transformers models.

The files the DGSS repositories tell users to download hold a flat state dict in Meta's layout
(github.com/facebookresearch/dinov2, `vision_transformer.py`). They are read with
`torch.load(weights_only=True)`, so reading one runs no code, and renamed as transformers'
`convert_dinov2_to_hf.py` does, to the names of the installed `Dinov2Model`:

    cls_token, mask_token, pos_embed       -> embeddings.cls_token, .mask_token, .position_embeddings
    register_tokens (the _reg4 files)      -> embeddings.register_tokens
    patch_embed.proj.*                     -> embeddings.patch_embeddings.projection.*
    blocks.i.norm1.*, norm2.*              -> encoder.layer.i.norm1.*, norm2.*
    blocks.i.attn.qkv.* (rows q | k | v)   -> encoder.layer.i.attention.{q,k,v}_proj.*
    blocks.i.attn.proj.*                   -> encoder.layer.i.attention.o_proj.*
    blocks.i.ls1.gamma, ls2.gamma          -> encoder.layer.i.layer_scale1.lambda1, layer_scale2.lambda1
    blocks.i.mlp.fc1.*, fc2.*              -> encoder.layer.i.mlp.fc1.*, fc2.*
    blocks.i.mlp.w12.* (rows gate | up)    -> encoder.layer.i.mlp.gate_proj.*, up_proj.*   (ViT-g, SwiGLU)
    blocks.i.mlp.w3.*                      -> encoder.layer.i.mlp.down_proj.*
    norm.*                                 -> layernorm.*

Chunked block layouts (`blocks.<chunk>.<i>.`) are read too. The architecture is read from the shapes:
width from cls_token, depth from the block count, patch size from the patch projection, image size from
pos_embed, registers from register_tokens, SwiGLU from w12, MLP ratio from fc1, and 64-wide heads (every
released DINOv2); `model.backbone_config` overrides any of them. Keys that do not fit are refused, naming
the first missing and unexpected ones.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import torch
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.models.backbones.base import check_state_matches

HEAD_DIM = 64
SUFFIXES = (".pth", ".pt")
_TOP = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
        "pos_embed": "embeddings.position_embeddings", "register_tokens": "embeddings.register_tokens",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj",
          "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
          "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.w3": "mlp.down_proj"}
_SPLIT = {"attn.qkv": ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
          "mlp.w12": ("mlp.gate_proj", "mlp.up_proj")}
_BLOCK_KEY = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")


def is_meta_checkpoint(weights: str | None) -> bool:
    return weights is not None and str(weights).endswith(SUFFIXES)


WRAPPERS = ("state_dict", "model", "teacher", "student", "module")
"""Keys under which training checkpoints keep the model's state (the first one present is taken)."""
PREFIXES = ("module.", "backbone.")
"""Prefixes that wrappers put before the backbone's keys (DDP's module., DINOv2 training's backbone.)."""


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat state dict of a .pth file, read without running code (weights_only). A training checkpoint
    is unwrapped: the state under its first WRAPPERS key (said on stderr), its keys without PREFIXES (keys
    outside a `backbone.` prefix, e.g. a DINO head, are dropped when there is one)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FisherTuneError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors of many kinds: all mean "not a plain tensor file"
        # torch's own message is not repeated: it suggests weights_only=False, which would run the file's
        # code, and may carry terminal colour codes
        kind = "holds objects other than tensors" if "npickl" in type(error).__name__ else \
            "is not a file written by torch.save"
        raise FisherTuneError(f"cannot read {path} as a weights-only torch file: it {kind} (nothing in it "
                              f"was run; FisherTune loads tensors only)") from None
    if isinstance(state, dict):
        wrapper = next((k for k in WRAPPERS if isinstance(state.get(k), dict)), None)
        if wrapper is not None and not all(isinstance(v, torch.Tensor) for v in state.values()):
            print(f"[weights] {path.name}: using the state under its {wrapper!r} key", file=sys.stderr)
            state = state[wrapper]
        state = _without_prefixes(state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise FisherTuneError(f"{path} does not hold a state dict of tensors (Meta's *_pretrain.pth layout, "
                              f"or one under {', '.join(WRAPPERS)}); its top level has {keys}")
    return state


def _without_prefixes(state: dict) -> dict:
    for prefix in PREFIXES:
        inside = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if inside and (prefix == "backbone." or len(inside) == len(state)):
            state = inside
    return state


def to_meta_name(name: str) -> str:
    """A transformers key in Meta's naming (the inverse of to_hf_names, q/k/v and gate/up named by the
    fused tensor they come from), for messages."""
    top = {hf: meta for meta, hf in _TOP.items()}
    if name in top:
        return top[name]
    match = re.match(r"^encoder\.layer\.(\d+)\.(.+)$", name)
    if not match:
        return name
    index, rest = match.groups()
    for meta, hf in _BLOCK.items():
        if rest == hf or rest.startswith(hf + "."):
            return f"blocks.{index}.{meta}{rest[len(hf):]}"
    for meta, parts in _SPLIT.items():
        for hf in parts:
            if rest.startswith(hf + "."):
                return f"blocks.{index}.{meta}{rest[len(hf):]}"
    return name


def to_hf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's keys renamed (and qkv / w12 split) as the module docstring says; unknown keys kept as they are,
    so a mismatch names them."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if key in _TOP:
            out[_TOP[key]] = value
        elif match:
            index, rest = match.groups()
            module, _, kind = rest.rpartition(".")
            prefix = f"encoder.layer.{index}."
            if rest in _BLOCK:
                out[prefix + _BLOCK[rest]] = value
            elif module in _BLOCK:
                out[f"{prefix}{_BLOCK[module]}.{kind}"] = value
            elif module in _SPLIT and value.shape[0] % len(_SPLIT[module]) == 0:
                for name, part in zip(_SPLIT[module], value.chunk(len(_SPLIT[module]), dim=0)):
                    out[f"{prefix}{name}.{kind}"] = part
            else:
                out[key] = value
        else:
            out[key] = value
    return out


def infer_config(state: dict[str, torch.Tensor]) -> dict:
    """Dinov2Config fields read from the shapes of a Meta state dict."""
    for needed in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if needed not in state:
            raise FisherTuneError(f"not a DINOv2 checkpoint in Meta's layout: no {needed!r} key")
    hidden = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    depth = len({int(m.group(1)) for m in map(_BLOCK_KEY.match, state) if m})
    config = dict(hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=max(1, hidden // HEAD_DIM),
                  patch_size=patch, image_size=math.isqrt(state["pos_embed"].shape[1] - 1) * patch,
                  layer_norm_eps=1e-6, qkv_bias=True, use_swiglu_ffn=any(".mlp.w12." in k for k in state))
    fc1 = next((v for k, v in state.items() if k.endswith("mlp.fc1.weight")), None)
    config["mlp_ratio"] = fc1.shape[0] // hidden if fc1 is not None else 4  # SwiGLU: ViT-g's 4
    if "register_tokens" in state:
        config["num_register_tokens"] = state["register_tokens"].shape[1]
    return config


def load_meta_dinov2(path: str | Path, config_class: type, model_class: type,
                     overrides: dict | None) -> nn.Module:
    """A transformers DINOv2 model (with or without registers) holding the weights of Meta's file."""
    state = read_state(path)
    fields = {**infer_config(state), **(overrides or {})}
    has_registers = "num_register_tokens" in fields and fields["num_register_tokens"] > 0
    if "num_register_tokens" not in config_class().to_dict():
        fields.pop("num_register_tokens", None)
    model = model_class(config_class(**fields))
    converted = to_hf_names(state)
    wants_registers = "embeddings.register_tokens" in model.state_dict()
    hint = ""
    if has_registers != wants_registers:
        hint = (" (the file has register tokens: use backbone dinov2_reg)" if has_registers
                else " (the file has no register tokens: use backbone dinov2)")
    own = model.state_dict()
    missing = sorted(dict.fromkeys(to_meta_name(k) for k in own if k not in converted))
    extra = sorted(k for k in state if to_hf_names({k: state[k]}).keys() - own.keys())
    if missing or extra:  # named as the file names them
        raise FisherTuneError(f"{path} does not match {model_class.__name__}: missing keys {missing[:3]}, "
                              f"unexpected keys {extra[:3]}{hint}")
    check_state_matches(own, converted, str(path), model_class.__name__, hint)
    model.load_state_dict(converted)
    return model.eval()
