"""Parameter-name parsing on the real names of tiny random models of each transformers family."""

from collections import Counter

import peft
import pytest
import transformers as T

from fishertune.report.naming import MODULE_TYPES, parse_param_name

TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, patch_size=4, image_size=16)

# Per block: module type -> number of parameter tensors, read off each family's layer definition.
FAMILIES = {
    "dinov2": (lambda: T.Dinov2Model(T.Dinov2Config(**TINY, intermediate_size=32)),
               {"Q": 2, "K": 2, "V": 2, "proj": 2, "FFN": 4, "norm": 4, "layerscale": 2},
               {"embeddings": 5, "norm": 2}),
    "dinov2_reg": (lambda: T.Dinov2WithRegistersModel(
                       T.Dinov2WithRegistersConfig(**TINY, intermediate_size=32)),
                   {"Q": 2, "K": 2, "V": 2, "proj": 2, "FFN": 4, "norm": 4, "layerscale": 2},
                   {"embeddings": 6, "norm": 2}),
    "clip": (lambda: T.CLIPVisionModel(T.CLIPVisionConfig(**TINY, intermediate_size=32)),
             {"Q": 2, "K": 2, "V": 2, "proj": 2, "FFN": 4, "norm": 4},
             {"embeddings": 3, "norm": 4}),
    "mae": (lambda: T.ViTMAEModel(T.ViTMAEConfig(**TINY, intermediate_size=32)),
            {"Q": 2, "K": 2, "V": 2, "proj": 2, "FFN": 4, "norm": 4},
            {"embeddings": 4, "norm": 2}),
    "sam": (lambda: T.SamVisionModel(T.SamVisionConfig(**TINY, mlp_dim=32, output_channels=8,
                                                       global_attn_indexes=[1], window_size=2)),
            {"QKV": 2, "proj": 2, "FFN": 4, "norm": 4, "other": 2},  # other: relative position tables
            {"embeddings": 3, "norm": 4, "other": 2}),  # neck: two convs (other) and two layer norms
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_parameter_of_each_family_lands_in_the_expected_cell(family):
    build, per_block, outside = FAMILIES[family]
    names = [name for name, _ in build().named_parameters()]
    cells = Counter(parse_param_name(name) for name in names)
    expected = Counter({(None, kind): n for kind, n in outside.items()})
    for block in range(TINY["num_hidden_layers"]):
        expected.update({(block, kind): n for kind, n in per_block.items()})
    assert cells == expected
    assert all(kind in MODULE_TYPES for _, kind in cells)


@pytest.mark.parametrize(("name", "expected"), [
    # current transformers spellings
    ("encoder.layer.1.attention.q_proj.weight", (1, "Q")),
    ("encoder.layer.1.attention.o_proj.bias", (1, "proj")),
    ("encoder.layer.0.layer_scale2.lambda1", (0, "layerscale")),
    ("encoder.layers.1.self_attn.out_proj.weight", (1, "proj")),
    ("vision_encoder.layers.1.attn.qkv.weight", (1, "QKV")),
    ("vision_encoder.layers.0.mlp.lin2.bias", (0, "FFN")),
    ("pre_layrnorm.weight", (None, "norm")),
    ("embeddings.patch_embeddings.projection.weight", (None, "embeddings")),
    # the older ViT/ViT-MAE/DINOv2 spelling (transformers 4.x)
    ("encoder.layer.3.attention.attention.query.weight", (3, "Q")),
    ("encoder.layer.3.attention.attention.key.bias", (3, "K")),
    ("encoder.layer.3.attention.attention.value.weight", (3, "V")),
    ("encoder.layer.3.attention.output.dense.weight", (3, "proj")),
    ("encoder.layer.3.intermediate.dense.weight", (3, "FFN")),
    ("encoder.layer.3.output.dense.bias", (3, "FFN")),
    ("encoder.layer.3.layernorm_before.weight", (3, "norm")),
    # timm ViT / EVA
    ("blocks.5.attn.qkv.weight", (5, "QKV")),
    ("blocks.5.attn.q_bias", (5, "Q")),
    ("blocks.5.gamma_1", (5, "layerscale")),
    ("blocks.5.mlp.fc1.weight", (5, "FFN")),
    ("cls_token", (None, "embeddings")),
    # prefixes from the Segmentor, and a block nested inside a block keeps the outer index
    ("backbone.model.encoder.layer.11.mlp.fc2.weight", (11, "FFN")),
    ("blocks.2.mlp.layers.0.weight", (2, "FFN")),
    ("head.classifier.weight", (None, "other")),
])
def test_names_of_other_spellings(name, expected):
    assert parse_param_name(name) == expected


def test_peft_lora_matrices_count_as_the_module_they_adapt():
    model = T.Dinov2Model(T.Dinov2Config(**TINY, intermediate_size=32))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora = [name for name, p in wrapped.named_parameters() if "lora_" in name]
    assert len(lora) == 2 * 2 * 2  # blocks × targets × (A, B)
    assert Counter(parse_param_name(name) for name in lora) == Counter(
        {(b, kind): 2 for b in range(2) for kind in ("Q", "V")})
