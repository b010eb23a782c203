"""Backbones: features equal the HF model's own hidden states, loading from folders/files, clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from fishertune.errors import FisherTuneError
from fishertune.models import build_backbone, tiny_backbone_config

HF_FAMILIES = ["clip", "dinov2", "dinov2_reg", "dinov2_s_offline", "mae", "sam"]


def reference_model(backbone):
    """An unmodified HF model (final norms, neck, mask token intact) holding the backbone's weights."""
    config = backbone.model.config
    if hasattr(config, "mask_ratio"):
        config.mask_ratio = 0.0  # MAE: keep every token (the backbone never masks)
    model = type(backbone.model)(config).eval()
    missing, unexpected = model.load_state_dict(backbone.model.state_dict(), strict=False)
    assert not unexpected
    return model


def reference_hidden_states(name, model, x, interpolate):
    """Hidden states after each block, straight from transformers ([B, h*w(+prefix), D])."""
    kwargs = {"output_hidden_states": True}
    if name == "mae":  # identity "noise" keeps every token in place: no shuffle at mask_ratio 0
        tokens = x.shape[-2] * x.shape[-1] // 16
        kwargs["noise"] = torch.arange(tokens, dtype=torch.float)[None].expand(len(x), -1)
    if name in ("clip", "mae") and interpolate:
        kwargs["interpolate_pos_encoding"] = True
    states = model(x, **kwargs).hidden_states[1:]
    return [h.flatten(1, 2) if h.dim() == 4 else h for h in states]


CASES = [(name, size) for name in HF_FAMILIES for size in [(32, 32), (40, 28)]]


@pytest.mark.parametrize(("name", "size"), CASES)
def test_features_equal_hf_hidden_states(name, size):
    """At the native 32 px and at 40x28 (position embeddings interpolated), block by block."""
    torch.manual_seed(0)
    backbone = build_backbone(name, config=tiny_backbone_config(name), out_indices=[0, 1, 2, 3]).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        features = backbone(x)
        reference = reference_model(backbone)
        if name == "sam":  # HF's SAM only runs at its configured size: give it the resampled grid we promise
            encoder = reference.vision_encoder
            grid = F.interpolate(encoder.pos_embed.permute(0, 3, 1, 2), size=(size[0] // 4, size[1] // 4),
                                 mode="bicubic", align_corners=False)
            encoder.pos_embed = torch.nn.Parameter(grid.permute(0, 2, 3, 1))
            encoder.patch_embed.image_size = size
        expected = reference_hidden_states(name, reference, x, interpolate=size != (32, 32))
    grid = (size[0] // 4, size[1] // 4)
    for got, ref in zip(features, expected):
        ref_map = ref[:, backbone.num_prefix_tokens:].transpose(1, 2).reshape(2, -1, *grid)
        torch.testing.assert_close(got, ref_map, rtol=1e-4, atol=1e-5)


def test_mae_is_deterministic_without_masking():
    backbone = build_backbone("mae", config=tiny_backbone_config("mae")).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        first, second = backbone(x)[-1], backbone(x)[-1]
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", HF_FAMILIES)
def test_loads_save_pretrained_folder_and_safetensors_file(name, tmp_path):
    torch.manual_seed(1)
    source = reference_model(build_backbone(name, config=tiny_backbone_config(name)))
    source.save_pretrained(tmp_path / "folder")
    (tmp_path / "file").mkdir()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "file" / "w.safetensors"))
    source.config.to_json_file(str(tmp_path / "file" / "config.json"))
    expected = source.state_dict()
    for weights in (tmp_path / "folder", tmp_path / "file" / "w.safetensors", str(tmp_path / "folder")):
        loaded = build_backbone(name, weights=weights)
        for key, value in loaded.model.state_dict().items():
            assert torch.equal(value, expected[key]), (weights, key)


def test_wrong_shapes_without_config_is_a_clear_error(tmp_path):
    source = reference_model(build_backbone("dinov2", config=tiny_backbone_config("dinov2")))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    wider = dict(tiny_backbone_config("dinov2"), hidden_size=48)
    with pytest.raises(FisherTuneError, match="has shape .* config.json"):
        build_backbone("dinov2", weights=tmp_path / "w.safetensors", config=wider)


def test_bad_names_and_missing_files_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FisherTuneError, match=r"did you mean 'dinov2'.*available: clip, dinov2"):
        build_backbone("dinov3")
    with pytest.raises(FisherTuneError, match="not found"):
        build_backbone("dinov2", weights=tmp_path / "nope.safetensors")
    with pytest.raises(FisherTuneError, match="not found"):
        build_backbone("dinov2", weights=str(tmp_path / "no_such_folder"))
    with pytest.raises(FisherTuneError, match="out of range"):
        build_backbone("dinov2", config=tiny_backbone_config("dinov2"), out_indices=[4])
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FisherTuneError, match="could not load"):
        build_backbone("dinov2", weights="no-such-org/no-such-model")


@pytest.mark.parametrize(("override", "message"), [
    ({"hidden_size": "32"}, "hidden_size must be a whole number >= 1, got '32'"),
    ({"hidden_size": 32.5}, "hidden_size must be a whole number >= 1, got 32.5"),
    ({"hidden_size": -1}, "hidden_size must be a whole number >= 1, got -1"),
    ({"num_attention_heads": 0}, "num_attention_heads must be a whole number >= 1, got 0"),
    ({"num_attention_heads": 3}, "hidden_size 32 is not divisible by num_attention_heads 3"),
    ({"patch_size": 0}, "patch_size must be a whole number >= 1, got 0"),
    ({"patch_size": 64}, "patch_size 64 is larger than image_size 32"),
    ({"image_size": 0}, "image_size must be a whole number >= 1, got 0"),
    ({"mlp_ratio": float("nan")}, "mlp_ratio must be a number > 0")])
def test_impossible_backbone_sizes_are_one_line_before_any_model_is_built(override, message):
    from fishertune.errors import InputError
    from fishertune.models.backbones import build_backbone, tiny_backbone_config

    config = {**tiny_backbone_config("dinov2"), **override}
    with pytest.raises(InputError) as error:
        build_backbone("dinov2", config=config)
    assert "model.backbone_config" in str(error.value) and message in str(error.value)


# -- the registry, one module per family --------------------------------------------------------------------
def test_list_backbones_lists_the_registry_sorted_and_by_pattern():
    from fishertune.models import list_backbones

    assert list_backbones() == ["clip", "dinov2", "dinov2_reg", "dinov2_s_offline", "eva02", "mae", "sam"]
    assert list_backbones("dinov2*") == ["dinov2", "dinov2_reg", "dinov2_s_offline"]
    assert list_backbones("*_reg") == ["dinov2_reg"]
    assert list_backbones("[cm]*") == ["clip", "mae"]
    assert list_backbones("DINOV2") == []  # case-sensitive, as registry names are
    assert list_backbones("nothing*") == []


def test_each_family_lives_in_its_own_module_and_the_package_keeps_every_name():
    import fishertune.models.backbones as package
    from fishertune.models.backbones import base

    modules = {name: BACKBONE.__module__ for name, BACKBONE in base.BACKBONES.items()}
    assert modules["dinov2"] == modules["dinov2_reg"] == "fishertune.models.backbones.dinov2"
    for family in ("clip", "mae", "sam", "eva02"):
        assert modules[family] == f"fishertune.models.backbones.{family}"
    assert modules["dinov2_s_offline"] == "fishertune.models.offline_dinov2"
    before = {"ALLOW_TORCH_WEIGHTS", "BACKBONES", "CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD",
              "POSITIVE_INT_FIELDS", "Backbone", "ClipBackbone", "Dinov2Backbone", "Dinov2RegistersBackbone",
              "Eva02Backbone", "HFBackbone", "MaeBackbone", "SamBackbone", "build_backbone",
              "check_backbone_config", "check_config_keys", "check_state_matches", "default_out_indices",
              "load_hf_model", "load_timm_state", "register_backbone", "resample_grid",
              "tiny_backbone_config"}
    assert before <= set(package.__all__)  # the public names of the single module before the split
    assert all(hasattr(package, name) for name in package.__all__)
