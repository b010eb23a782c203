"""Where a backbone parameter sits: its transformer block and the kind of module it belongs to.

`parse_param_name` reads the dotted names of the transformers families (DINOv2 with and without
registers, CLIP, ViT-MAE, SAM, in both the current `q_proj`/`fc1` spelling and the older
`attention.attention.query` / `intermediate.dense` one) and timm ViTs (`blocks.N.attn.qkv`). Any prefix
(`backbone.model.`, peft's `base_model.model.`) and suffix (`.weight`, `.lora_A.default.weight`) is
ignored, so a LoRA matrix on a query projection counts as Q.
"""

from __future__ import annotations

import re

MODULE_TYPES: tuple[str, ...] = (
    "embeddings", "Q", "K", "V", "QKV", "proj", "FFN", "norm", "layerscale", "other",
)
"""Module types in display order (the heatmap's columns)."""

_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|blocks|block)\.(\d+)(?:\.|$)")

_EMBEDDING_TOKENS = {
    "embeddings", "embedding", "patch_embed", "patch_embeddings", "patch_embedding", "pos_embed",
    "position_embeddings", "position_embedding", "cls_token", "class_embedding", "register_tokens",
    "reg_token", "mask_token",
}
_ATTENTION_TOKENS = {"attention", "attn", "self_attn", "self_attention"}
_FFN_TOKENS = {"mlp", "ffn", "intermediate", "fc1", "fc2", "lin1", "lin2", "weights_in", "weights_out"}


def _module_type(tokens: list[str]) -> str:
    """Classifies by the name's tokens; the first rule that matches wins (order matters:
    `attention.output.dense` is the attention projection, a bare `output.dense` is the FFN's)."""
    tokenset = set(tokens)
    if tokenset & _EMBEDDING_TOKENS:
        return "embeddings"
    if any(t.startswith(("layer_scale", "layerscale")) or t in {"gamma_1", "gamma_2", "ls1", "ls2"}
           for t in tokens):
        return "layerscale"
    if any("norm" in t for t in tokens):  # norm1, layer_norm1, layernorm_before, CLIP's pre_layrnorm
        return "norm"
    if any(t == "qkv" or t.startswith(("qkv_", "in_proj")) for t in tokens):
        return "QKV"
    for kind, names in (("Q", {"q_proj", "query", "q", "to_q", "q_bias"}),
                        ("K", {"k_proj", "key", "k", "to_k", "k_bias"}),
                        ("V", {"v_proj", "value", "v", "to_v", "v_bias"})):
        if tokenset & names:
            return kind
    if tokenset & {"o_proj", "out_proj", "to_out"} or (
            tokenset & _ATTENTION_TOKENS and tokenset & {"proj", "output", "dense"}):
        return "proj"
    if tokenset & _FFN_TOKENS or "output" in tokenset:
        return "FFN"
    return "other"


def parse_param_name(name: str) -> tuple[int | None, str]:
    """(block index or None when the parameter lies outside the blocks, module type in MODULE_TYPES).

    Examples: `encoder.layer.3.attention.q_proj.weight` -> (3, "Q");
    `vision_encoder.layers.0.attn.qkv.bias` -> (0, "QKV"); `embeddings.cls_token` -> (None, "embeddings");
    `layernorm.weight` -> (None, "norm"). SAM's relative position tables (`attn.rel_pos_h`) and its
    convolutional neck are "other".
    """
    match = _BLOCK.search(name)  # the outermost block: a nested `mlp.layers.0` stays inside it
    block = int(match.group(1)) if match else None
    inside = name[match.end():] if match else name
    return block, _module_type(inside.split("."))
