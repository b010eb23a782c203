"""`fishertune export RUN --onnx FILE`: the tuned segmenter as one ONNX graph, checked with onnxruntime.

The graph takes `images` [B, 3, H, W] float32 RGB in [0, 1], with H and W any multiples of the backbone's
patch size (dynamic axes), and returns `logits` [B, C, H, W]: normalisation, backbone (position embeddings
resampled to the input's grid inside the graph), head and the bilinear upsampling to the input size, the
same computation as `Segmentor.predict(images, mode="whole")`. Sliding-window inference stays with the
caller (run the graph per window).

What the method changed is in the weights: FisherTune's and the mask methods' delta and full fine-tuning
are dense weights already, LoRA is merged into the linear layers it adapts (W + (alpha/r)·B·A), and the
modules Rein, VPT and AdaptFormer add run as ordinary operators of the graph. The export traces the model
(torch.onnx's TorchScript exporter, which needs `onnx` but not `onnxscript`) and then runs onnxruntime and
PyTorch on a few inputs of different sizes; the largest absolute logit difference is reported, and an
export whose difference exceeds `TOLERANCE` is refused and not kept.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fishertune.errors import FisherTuneError

TOLERANCE = 1e-3
"""Largest absolute logit difference between onnxruntime and PyTorch accepted (float32)."""
OPSET = 17


class OnnxSegmentor(nn.Module):
    """The whole-image forward of a Segmentor for input sides that are multiples of the patch size."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.segmentor
        logits = s.head.logits(s.head(s.backbone(s.normalise(images))))
        return F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)


def merge_lora(model: nn.Module) -> int:
    """Fold every peft LoRA layer into its base linear layer and put the base layer back in its place;
    returns how many were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            merged += 1
    return merged


def check_exportable(model: nn.Module) -> None:
    """Refuse, with the reason, models whose forward cannot be one static ONNX graph."""
    from fishertune.tuners.rein import Reins

    head = model.head
    reins = getattr(model.backbone, "reins", None)
    if isinstance(reins, Reins) and getattr(head, "extra_queries", None) is not None:
        raise FisherTuneError("Rein with link_queries cannot be exported to ONNX: the head calls back into "
                              "the tuner for its extra queries, which tracing cannot follow")


def sample_sizes(patch: int) -> list[tuple[int, int, int]]:
    """(batch, height, width) of the check inputs: the export size, a wider and a taller one."""
    return [(1, 8 * patch, 8 * patch), (2, 6 * patch, 10 * patch), (1, 11 * patch, 7 * patch)]


def export_onnx(run_dir: str | Path, path: str | Path, backbone: str | None = None) -> dict:
    """Write `path` from a run or export folder; returns {"max_abs_diff", "checks": [(shape, diff)]}."""
    try:
        import onnx  # noqa: F401  (torch.onnx writes the graph with it)
        import onnxruntime
    except ImportError:
        raise FisherTuneError("ONNX export needs onnx and onnxruntime: "
                              "pip install 'fishertune[onnx]'") from None

    from fishertune.atomic import write_atomic
    from fishertune.engine.build import load_run

    run_dir, path = Path(run_dir), Path(path)
    if path.suffix != ".onnx":
        raise FisherTuneError(f"--onnx expects a .onnx file name, got {path}")
    _, model = load_run(run_dir, backbone=backbone)
    check_exportable(model)
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
            checks.append((list(x.shape), diff))
            if not diff <= TOLERANCE:
                raise FisherTuneError(f"ONNX check failed: onnxruntime and PyTorch differ by {diff:.3g} on "
                                      f"input {list(x.shape)} (tolerance {TOLERANCE}); nothing written")

    checks: list[tuple[list[int], float]] = []
    with torch.random.fork_rng(devices=[]):
        write_atomic(path, write)
    return {"max_abs_diff": max(d for _, d in checks), "checks": checks, "patch_size": patch}
