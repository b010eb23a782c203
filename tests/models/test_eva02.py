"""EVA02 through timm: features equal timm's own, checkpoints map in, mismatches are refused by name.

The segmentor and tuner tests cover eva02 through their registry-wide parametrisation. timm is an optional
extra: without it these tests skip, saying so; `bash scripts/test_eva02.sh` runs them in an environment
that has it.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from safetensors.torch import save_file

from fishertune.errors import FisherTuneError
from fishertune.models import build_backbone, tiny_backbone_config

needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason="eva02 needs the timm extra (bash scripts/test_eva02.sh)")

# Tiny versions of timm's two EVA02 layouts: tiny/small fuse q/k/v (with q and v biases) and pack the SwiGLU
# MLP; base/large keep separate q/k/v projections and put a norm inside the SwiGLU MLP.
LAYOUTS = {"fused": tiny_backbone_config("eva02"),
           "separate": dict(tiny_backbone_config("eva02"), model_name="eva02_base_patch14_224")}
HEAD_MODULES = ("norm", "fc_norm", "head")
# timm key -> the original BAAI EVA02 key (what timm's checkpoint_filter_fn renames back)
BAAI_NAMES = [(".mlp.fc1_g.", ".mlp.w1."), (".mlp.fc1_x.", ".mlp.w2."), (".mlp.fc1.", ".mlp.w12."),
              (".mlp.fc2.", ".mlp.w3."), (".mlp.norm.", ".mlp.ffn_ln."),
              (".attn.q_proj.bias", ".attn.q_bias"), (".attn.v_proj.bias", ".attn.v_bias")]


def timm_model(config: dict, num_classes: int = 0, seed: int = 0):
    """An unmodified timm Eva of `config` (final norm and classifier intact), every parameter redrawn from
    N(0, 0.2²) so that no term hides behind timm's zero-initialised biases."""
    import timm

    kwargs = dict(config, num_classes=num_classes, dynamic_img_size=True)
    model = timm.create_model(kwargs.pop("model_name"), **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def timm_features(model, x: torch.Tensor) -> list[torch.Tensor]:
    """timm's own per-block feature maps [B, D, h, w] of blocks 0..3 (no final norm)."""
    return model.forward_intermediates(x, indices=[0, 1, 2, 3], norm=False, output_fmt="NCHW",
                                       intermediates_only=True)


@needs_timm
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(("patch", "size"), [(4, (32, 32)), (4, (40, 28)), (14, (56, 42))])
def test_eva02_features_equal_timm_intermediates(layout, patch, size):
    """Block by block, at the configured size and at others (position and rotary embeddings resampled)."""
    config = dict(LAYOUTS[layout], patch_size=patch, img_size=8 * patch)
    reference = timm_model(config)
    backbone = build_backbone("eva02", config=config, out_indices=[0, 1, 2, 3]).eval()
    _, unexpected = backbone.model.load_state_dict(reference.state_dict(), strict=False)
    assert all(k.split(".")[0] in HEAD_MODULES for k in unexpected)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        features, expected = backbone(x), timm_features(reference, x)
    assert len(features) == 4
    for got, ref in zip(features, expected):
        assert got.shape == (2, 32, size[0] // patch, size[1] // patch)  # stride = patch size
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


@needs_timm
def test_eva02_normalises_like_clip():
    """EVA02 was pretrained on CLIP-normalised images (timm's pretrained config of EVA02 says so)."""
    backbone = build_backbone("eva02", config=tiny_backbone_config("eva02"))
    for layout in LAYOUTS.values():
        cfg = timm_model(layout).pretrained_cfg
        assert backbone.mean == pytest.approx(cfg["mean"]) and backbone.std == pytest.approx(cfg["std"])


@needs_timm
def test_eva02_prompts_between_prefix_and_patches_are_not_rotated():
    """A token inserted after the cls token (VPT's prompts) is treated as one more prefix token, by timm's
    own prefix handling as the reference."""
    backbone = build_backbone("eva02", config=tiny_backbone_config("eva02")).eval()
    block = backbone.blocks[1]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, kwargs = backbone.embed(x)
        hidden = torch.cat([tokens[:, :1], torch.randn(2, 3, 32), tokens[:, 1:]], dim=1)
        got = block(hidden, **kwargs)
        block.layer.attn.num_prefix_tokens = 4  # cls + 3 prompts, left alone by timm's attention
        expected = block.layer(hidden, rope=kwargs["rope"])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@needs_timm
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("keys", ["timm", "baai"])
def test_eva02_loads_a_state_dict_from_safetensors(layout, keys, tmp_path):
    """A classifier checkpoint (final norm and head included) written and read back: every backbone weight
    equals the checkpoint's, the head's entries are ignored, features equal timm's."""
    source = timm_model(LAYOUTS[layout], num_classes=7, seed=2)
    expected = source.state_dict()
    state = {k: v.contiguous() for k, v in expected.items()}
    if keys == "baai":  # the original release's names, and a masked-image-modelling checkpoint's mask token
        for timm_name, baai_name in BAAI_NAMES:
            state = {k.replace(timm_name, baai_name): v for k, v in state.items()}
        state["mask_token"] = torch.zeros(1, 1, 32)
        assert set(state) - set(expected)  # something was renamed
    save_file(state, str(tmp_path / "eva02.safetensors"))
    backbone = build_backbone("eva02", weights=tmp_path / "eva02.safetensors", config=LAYOUTS[layout],
                              out_indices=[0, 1, 2, 3]).eval()
    loaded = backbone.model.state_dict()
    assert set(loaded) == {k for k in expected if k.split(".")[0] not in HEAD_MODULES}
    assert all(torch.equal(v, expected[k]) for k, v in loaded.items())
    x = torch.randn(1, 3, 36, 28)
    with torch.no_grad():
        for got, ref in zip(backbone(x), timm_features(source, x)):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


@needs_timm
def test_eva02_refuses_a_state_dict_that_does_not_match(tmp_path):
    config = LAYOUTS["fused"]
    state = timm_model(config).state_dict()
    state.pop("blocks.1.attn.proj.weight")
    state["blocks.1.attn.gate.weight"] = torch.zeros(32, 32)
    save_file(state, str(tmp_path / "keys.safetensors"))
    names = r"missing keys \['blocks.1.attn.proj.weight'\], unexpected keys \['blocks.1.attn.gate.weight'\]"
    with pytest.raises(FisherTuneError, match=names + ".*model_name"):
        build_backbone("eva02", weights=tmp_path / "keys.safetensors", config=config)
    save_file(timm_model(config).state_dict(), str(tmp_path / "narrow.safetensors"))
    with pytest.raises(FisherTuneError, match=r"has shape \(1, 1, 32\), eva02 .* expects \(1, 1, 48\)"):
        build_backbone("eva02", weights=tmp_path / "narrow.safetensors", config=dict(config, embed_dim=48))


@needs_timm
def test_eva02_bad_weights_and_names_are_clear_errors(tmp_path, monkeypatch):
    config = tiny_backbone_config("eva02")
    with pytest.raises(FisherTuneError, match="not found"):
        build_backbone("eva02", weights=tmp_path / "nope.safetensors", config=config)
    with pytest.raises(FisherTuneError, match="expected a .safetensors file"):
        build_backbone("eva02", weights=tmp_path, config=config)
    with pytest.raises(FisherTuneError, match="could not build eva02 'eva03_tiny'"):
        build_backbone("eva02", config=dict(config, model_name="eva03_tiny"))
    with pytest.raises(FisherTuneError, match="could not build eva02 .*embed_dimm"):
        build_backbone("eva02", config=dict(config, embed_dimm=32))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FisherTuneError, match="could not build eva02 'hf-hub:no-such-org/no-such-model'"):
        build_backbone("eva02", weights="hf-hub:no-such-org/no-such-model")


def test_eva02_without_timm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` fails, whether or not it is installed
    with pytest.raises(FisherTuneError, match="install the timm extra"):
        build_backbone("eva02")
