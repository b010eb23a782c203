"""`fishertune export RUN --onnx FILE`: the tuned segmenter as one ONNX graph, checked with onnxruntime.

The graph takes `images` [B, 3, H, W] float32 RGB in [0, 1], any H and W (dynamic axes), and returns
`logits` [B, C, H, W]: normalisation, zero padding to a multiple of the patch size, backbone (position
embeddings resampled to the input's grid inside the graph), head, the bilinear upsampling to the padded
size and the crop back to the input, the same computation as
`Segmentor.predict(images, mode="whole")`. The file's metadata holds the class names, palette, patch
size, normalisation and the base's hash. Sliding-window inference stays with the caller (run the graph
per window).

What the method changed is in the weights: FisherTune's and the mask methods' delta and full fine-tuning
are dense weights already, LoRA is merged into the linear layers it adapts (W + (alpha/r)·B·A), and the
modules Rein, VPT and AdaptFormer add run as ordinary operators of the graph. The export traces the model
(torch.onnx's TorchScript exporter, which needs `onnx` but not `onnxscript`) and then runs onnxruntime and
PyTorch on a few inputs of different sizes; the largest absolute logit difference is reported, and an
export whose difference exceeds `TOLERANCE` is refused and not kept.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from torch import nn

from fishertune.atomic import check_writable, write_atomic
from fishertune.engine.assemble import build_base, run_classes
from fishertune.engine.build import load_run
from fishertune.engine.config import load_config
from fishertune.engine.export import MANIFEST, backbone_sha256, is_export
from fishertune.errors import FisherTuneError
from fishertune.tuners.rein import Reins

TOLERANCE = 1e-3
"""Largest absolute logit difference between onnxruntime and PyTorch accepted (float32)."""
OPSET = 17


class OnnxSegmentor(nn.Module):
    """The whole-image forward of a Segmentor for any input size, as `Segmentor.predict(mode="whole")`:
    the normalised image is zero-padded at the bottom/right to a multiple of the patch size, and the
    logits, upsampled to the padded size, are cropped back to the input (the sizes are computed inside the
    graph, so it serves every size)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.segmentor
        p = s.backbone.patch_size
        height, width = images.shape[-2], images.shape[-1]
        pad_h, pad_w = (p - height % p) % p, (p - width % p) % p
        padded = F.pad(s.normalise(images), [0, pad_w, 0, pad_h])
        logits = s.head.logits(s.head(s.backbone(padded)))
        logits = F.interpolate(logits.float(), size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[:, :, :height, :width]


def merge_lora(model: nn.Module) -> int:
    """Fold every peft LoRA layer into its base linear layer and put the base layer back in its place;
    returns how many were merged."""
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            merged += 1
    return merged


NOT_EXPORTABLE = {
    "dinov2_reg": "its position embeddings are resampled with antialiased bicubic interpolation, which "
                  "ONNX opset 17 does not have",
    "mae": "its position embeddings are fixed to the image size it was built for, so the graph would "
           "serve that size only",
    "sam": "its windowed attention and position embeddings are fixed to the traced size, so the graph "
           "would serve that size only"}
"""Backbones whose forward cannot be one ONNX graph for every input size, and why."""


def check_exportable(model: nn.Module) -> None:
    """Refuse, with the reason, models whose forward cannot be one ONNX graph for every input size."""
    name = getattr(model.backbone, "name", "")
    if name in NOT_EXPORTABLE:
        raise FisherTuneError(f"a {name} backbone cannot be exported to ONNX: {NOT_EXPORTABLE[name]}; "
                              f"use `fishertune predict` or `fishertune.load_pretrained` instead")

    head = model.head
    reins = getattr(model.backbone, "reins", None)
    if isinstance(reins, Reins) and getattr(head, "extra_queries", None) is not None:
        raise FisherTuneError("Rein with link_queries cannot be exported to ONNX: the head calls back into "
                              "the tuner for its extra queries, which tracing cannot follow")


def sample_sizes(patch: int) -> list[tuple[int, int, int]]:
    """(batch, height, width) of the check inputs: the export size, a wider and a taller one, and sides
    that are not multiples of the patch size (as most camera images are not)."""
    return [(1, 8 * patch, 8 * patch), (2, 6 * patch, 10 * patch), (1, 11 * patch, 7 * patch),
            (1, 8 * patch + 3, 6 * patch - 5), (2, 5 * patch - 1, 9 * patch + 1)]


def check_onnx_output(path: str | Path) -> None:
    """Refuse, before any work, an ONNX export that could not finish: onnx or onnxruntime missing, a file
    name without .onnx, or a place where the file cannot be written."""
    try:  # optional dependencies: onnx and onnxruntime, the extra `fishertune[onnx]`
        import onnx  # noqa: F401  (torch.onnx writes the graph with it)
        import onnxruntime  # noqa: F401
    except ImportError:
        raise FisherTuneError("ONNX export needs onnx and onnxruntime: "
                              "pip install 'fishertune[onnx]'") from None
    if Path(path).suffix != ".onnx":
        raise FisherTuneError(f"--onnx expects a .onnx file name, got {path}")
    check_writable(path)
    if Path(path).exists() and not _written_by_fishertune(Path(path)):
        raise FisherTuneError(f"--onnx {path} exists and is not an ONNX export of FisherTune: choose another "
                              f"path (nothing was overwritten)")


def _written_by_fishertune(path: Path) -> bool:
    """Whether `path` is an ONNX graph with FisherTune's metadata (an earlier export: it may be replaced)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # any file onnx cannot read is not one
        return False
    return any(prop.key == "fishertune.classes" for prop in graph.metadata_props)


def load_exportable(run_dir: str | Path, backbone: str | None = None) -> nn.Module:
    """The model of a run or export folder, refused (check_exportable) before anything is written."""
    _, model = load_run(Path(run_dir), backbone=backbone)
    check_exportable(model)
    return model


def export_onnx(run_dir: str | Path, path: str | Path, backbone: str | None = None,
                model: nn.Module | None = None) -> dict:
    """Write `path` from a run or export folder (its model, or `model` as `load_exportable` gave it);
    returns {"max_abs_diff", "checks": [(shape, diff)]}."""
    import onnxruntime  # optional dependency: the extra `fishertune[onnx]`

    check_onnx_output(path)
    run_dir, path = Path(run_dir), Path(path)
    model = load_exportable(run_dir, backbone) if model is None else model
    merge_lora(model)
    graph = OnnxSegmentor(model).eval()
    patch = model.backbone.patch_size
    sizes = sample_sizes(patch)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(b, 3, h, w, generator=generator) for b, h, w in sizes]

    def write(temp: str) -> None:
        with warnings.catch_warnings():  # tracer warnings about Python-side checks of the input size
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (inputs[0],), temp, dynamo=False, opset_version=OPSET,
                              input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                            "logits": {0: "batch", 2: "height", 3: "width"}})
        session = onnxruntime.InferenceSession(temp, providers=["CPUExecutionProvider"])
        for x in inputs:
            with torch.no_grad():
                expected = model.predict(x, mode="whole").numpy()
            got = session.run(None, {"images": x.numpy()})[0]
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
            agreement = float((got.argmax(1) == expected.argmax(1)).mean()) if np.isfinite(diff) else 0.0
            checks.append((list(x.shape), diff, agreement))
            if not diff <= TOLERANCE:
                raise FisherTuneError(f"ONNX check failed: onnxruntime and PyTorch differ by {diff:.3g} on "
                                      f"input {list(x.shape)} (tolerance {TOLERANCE}); nothing written")

    checks: list[tuple[list[int], float, float]] = []
    with torch.random.fork_rng(devices=[]):
        write_atomic(path, lambda temp: (write(temp), add_metadata(temp, model_metadata(run_dir, model))))
    return {"max_abs_diff": max(c[1] for c in checks), "min_agreement": min(c[2] for c in checks),
            "checks": checks, "patch_size": patch}


def model_metadata(run_dir: Path, model: nn.Module) -> dict[str, str]:
    """What a consumer of the graph needs besides it: class names, palette, patch size, the normalisation
    (applied inside the graph; given for reference) and the base weights' hash."""
    config = load_config(run_dir / "config.yaml")
    classes = run_classes(config)
    backbone = model.backbone
    return {"fishertune.classes": json.dumps(list(classes.names)),
            "fishertune.palette": json.dumps([list(map(int, c)) for c in classes.palette]),
            "fishertune.patch_size": str(backbone.patch_size),
            "fishertune.input": "images [B, 3, H, W] float32 RGB in [0, 1], any H and W",
            "fishertune.mean": json.dumps(list(backbone.mean)),
            "fishertune.std": json.dumps(list(backbone.std)),
            "fishertune.method": config.method.name,
            "fishertune.base_weights": config.model.weights or "",  # "": the backbone's own (or random)
            "fishertune.base_sha256": base_sha256(run_dir, config)}


def base_sha256(run_dir: Path, config) -> str:
    """The base backbone's weights hash, as `fishertune export` records it (read from an export folder;
    for a run folder, from the base rebuilt as the export does)."""
    if is_export(run_dir):
        return str(json.loads((run_dir / MANIFEST).read_text())["base_sha256"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        return backbone_sha256(build_base(config).backbone)


def add_metadata(path: str, metadata: dict[str, str]) -> None:
    import onnx  # optional dependency: the extra `fishertune[onnx]`

    graph = onnx.load(path)
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, path)
