"""Meta's DINOv2 .pth checkpoints: a tiny transformers model written in Meta's layout loads back exactly.

The Meta layout is produced here by this test's own key table (from facebookresearch/dinov2's
`vision_transformer.py` names), independently of `fishertune.models.dinov2_meta`.
"""

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from fishertune.errors import FisherTuneError
from fishertune.models.backbones import Dinov2Backbone, Dinov2RegistersBackbone, build_backbone

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, patch_size=4,
            image_size=32, layer_norm_eps=1e-6)


def meta_layout(hf: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """HF Dinov2Model state -> the state dict of Meta's DinoVisionTransformer."""
    meta = {"cls_token": hf["embeddings.cls_token"], "mask_token": hf["embeddings.mask_token"],
            "pos_embed": hf["embeddings.position_embeddings"],
            "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
            "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
            "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"]}
    if "embeddings.register_tokens" in hf:
        meta["register_tokens"] = hf["embeddings.register_tokens"]
    for i in range(layers):
        h = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            meta[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [hf[f"{h}attention.{p}_proj.{kind}"] for p in ("q", "k", "v")])
            meta[f"blocks.{i}.attn.proj.{kind}"] = hf[f"{h}attention.o_proj.{kind}"]
            for norm in ("norm1", "norm2"):
                meta[f"blocks.{i}.{norm}.{kind}"] = hf[f"{h}{norm}.{kind}"]
            if f"{h}mlp.fc1.{kind}" in hf:
                meta[f"blocks.{i}.mlp.fc1.{kind}"] = hf[f"{h}mlp.fc1.{kind}"]
                meta[f"blocks.{i}.mlp.fc2.{kind}"] = hf[f"{h}mlp.fc2.{kind}"]
            else:  # SwiGLU (ViT-g): w12 = [gate; up], w3 = down
                meta[f"blocks.{i}.mlp.w12.{kind}"] = torch.cat([hf[f"{h}mlp.gate_proj.{kind}"],
                                                               hf[f"{h}mlp.up_proj.{kind}"]])
                meta[f"blocks.{i}.mlp.w3.{kind}"] = hf[f"{h}mlp.down_proj.{kind}"]
        meta[f"blocks.{i}.ls1.gamma"] = hf[f"{h}layer_scale1.lambda1"]
        meta[f"blocks.{i}.ls2.gamma"] = hf[f"{h}layer_scale2.lambda1"]
    return {k: v.clone() for k, v in meta.items()}


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Every tensor random (layer scales and biases too), so a swapped or zero entry shows in the output."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


CASES = {
    "dinov2": (Dinov2Backbone, Dinov2Config, Dinov2Model, {}),
    "dinov2_swiglu": (Dinov2Backbone, Dinov2Config, Dinov2Model, {"use_swiglu_ffn": True, "mlp_ratio": 4}),
    "dinov2_reg": (Dinov2RegistersBackbone, Dinov2WithRegistersConfig, Dinov2WithRegistersModel,
                   {"num_register_tokens": 4}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_meta_checkpoint_loads_to_the_same_model(case, tmp_path):
    backbone_class, config_class, model_class, extra = CASES[case]
    original = randomised(model_class(config_class(**{**TINY, **extra})))
    path = tmp_path / "dinov2_vitt4_pretrain.pth"
    torch.save(meta_layout(original.state_dict(), TINY["num_hidden_layers"]), path)

    loaded = build_backbone(backbone_class.name, weights=str(path), config={"num_attention_heads": 2})
    reference = backbone_class.from_model(original)
    ours = dict(loaded.state_dict())
    for name, tensor in reference.state_dict().items():
        assert torch.equal(ours.pop(name), tensor), name
    assert not ours
    images = torch.randn(2, 3, 24, 36)
    with torch.no_grad():
        for got, want in zip(loaded(images), reference(images)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_mismatched_keys_are_named(tmp_path):
    original = randomised(Dinov2Model(Dinov2Config(**TINY)))
    state = meta_layout(original.state_dict(), TINY["num_hidden_layers"])
    state["blocks.1.attn.qkv_extra.weight"] = state.pop("blocks.1.attn.qkv.weight")
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    missing = r"missing keys \['blocks\.1\.attn\.qkv\.weight'\], "  # named as Meta's files name them
    unexpected = r"unexpected keys \['blocks\.1\.attn\.qkv_extra\.weight'\]"
    with pytest.raises(FisherTuneError, match=missing + unexpected):
        build_backbone("dinov2", weights=str(path), config={"num_attention_heads": 2})


def test_register_checkpoint_on_the_plain_backbone_says_which_to_use(tmp_path):
    original = randomised(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY, num_register_tokens=4)))
    path = tmp_path / "dinov2_vitt4_reg4_pretrain.pth"
    torch.save(meta_layout(original.state_dict(), TINY["num_hidden_layers"]), path)
    with pytest.raises(FisherTuneError, match="use backbone dinov2_reg"):
        build_backbone("dinov2", weights=str(path), config={"num_attention_heads": 2})


def test_a_pickled_object_is_not_loaded(tmp_path):
    """weights_only: a file that needs code to unpickle is refused, not run."""
    path = tmp_path / "evil.pth"
    torch.save({"cls_token": torch.zeros(1), "extra": object.__new__(Dinov2Config)}, path)
    with pytest.raises(FisherTuneError, match="weights-only"):
        build_backbone("dinov2", weights=str(path))


def test_architecture_is_read_from_the_shapes():
    from fishertune.models.dinov2_meta import infer_config

    hf = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(hidden_size=128, num_hidden_layers=2,
                                                             num_attention_heads=2, patch_size=14,
                                                             image_size=518, num_register_tokens=4))
    config = infer_config(meta_layout(hf.state_dict(), 2))
    assert config["hidden_size"] == 128 and config["num_hidden_layers"] == 2 and config["patch_size"] == 14
    assert config["image_size"] == 518 and config["num_register_tokens"] == 4 and config["mlp_ratio"] == 4
    assert config["num_attention_heads"] == 2  # 64-wide heads, as every released DINOv2


@pytest.mark.parametrize("wrap", ["state_dict", "model-module", "teacher-backbone"])
def test_training_checkpoints_are_unwrapped_and_say_which_key(wrap, tmp_path, capsys):
    original = randomised(Dinov2Model(Dinov2Config(**TINY)))
    state = meta_layout(original.state_dict(), TINY["num_hidden_layers"])
    if wrap == "state_dict":
        saved = {"state_dict": state, "epoch": torch.tensor(3)}
    elif wrap == "model-module":  # DDP's prefix
        saved = {"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {}}
    else:  # a DINOv2 training checkpoint: the teacher's backbone next to its DINO head
        saved = {"teacher": {**{f"backbone.{k}": v for k, v in state.items()},
                             "dino_head.mlp.0.weight": torch.zeros(2, 2)}, "iteration": torch.tensor(1)}
    path = tmp_path / "training.pth"
    torch.save(saved, path)
    loaded = build_backbone("dinov2", weights=str(path), config={"num_attention_heads": 2})
    key = wrap.split("-")[0]
    assert f"using the state under its '{key}' key" in capsys.readouterr().err
    reference = Dinov2Backbone.from_model(original)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_a_file_torch_cannot_read_gets_our_message_not_torchs_advice(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(FisherTuneError) as error:
        build_backbone("dinov2", weights=str(path))
    message = str(error.value)
    assert "not a file written by torch.save" in message
    assert "weights_only=False" not in message and "\x1b" not in message
