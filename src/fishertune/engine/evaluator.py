"""Evaluation: mIoU of a segmentor on datasets, with whole-image or sliding-window inference.

Each process of a distributed run scores the images i = rank, rank + world, ... of a dataset (no padding,
so nothing is counted twice) and the confusion matrices are all-reduced, giving every process the exact
single-process result. With `per_image=True` the result also holds every image's per-class intersection
and union counts (metrics.per_image_counts), the numbers a bootstrap over images resamples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fishertune.atomic import save_tensors
from fishertune.data.classes import CITYSCAPES
from fishertune.data.labels import CLASS_SUBSETS
from fishertune.engine import distributed
from fishertune.engine.metrics import ConfusionMatrix, per_image_counts
from fishertune.engine.precision import autocast
from fishertune.errors import FisherTuneError, InputError
from fishertune.label_space import IGNORE_INDEX

PER_IMAGE_FILE = "per_image.safetensors"
"""A run folder's per-image counts of its target domains: "<domain>/intersection", "<domain>/union"."""


@dataclass
class Inference:
    """How `Segmentor.predict` is called: whole image, or windows of `crop` px every `stride` px
    (`window_batch` per pass), optionally with flip test-time augmentation, under `amp` precision."""

    mode: str = "whole"
    crop: int | None = None
    stride: int | None = None
    window_batch: int = 8
    flip: bool = False
    amp: str = "off"

    @classmethod
    def from_config(cls, config) -> Inference:
        """A run config's inference: its eval section, windows of data.crop px unless eval.crop says,
        precision eval.amp (default train.amp)."""
        e = config.eval
        return cls(e.mode, e.crop or config.data.crop, e.stride, e.window_batch, e.flip,
                   e.amp if e.amp is not None else config.train.amp)

    def kwargs(self) -> dict:
        extra = {"flip": True} if self.flip else {}
        if self.mode == "whole":
            return {"mode": "whole", **extra}
        crop = self.crop or 512
        return {"mode": "slide", "crop": crop, "stride": self.stride or max(1, 2 * crop // 3),
                "window_batch": self.window_batch, **extra}


@dataclass(frozen=True)
class EvalSettings:
    """How a run is evaluated: its `Inference`, images per forward pass and DataLoader worker processes."""

    inference: Inference = field(default_factory=Inference)
    batch_size: int = 1
    workers: int = 0

    @classmethod
    def from_config(cls, config) -> EvalSettings:
        """A run config's settings: `Inference.from_config`, eval.batch_size and data.workers."""
        return cls(Inference.from_config(config), config.eval.batch_size, config.data.workers)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, settings: EvalSettings, device: torch.device,
             progress: bool = False, per_image: bool = False) -> dict:
    """{"miou": percent, "iou": {class name: percent or None}, "pixel_accuracy": percent, "images": n,
    "miou_subsets": {"16": percent or None, "13": ...}, "label_table": how the labels became train ids},
    plus "per_image": {"intersection", "union"} (int64 [n, classes], dataset order) if asked.

    The subset mIoUs average the same per-class IoUs over the 16 or 13 classes SYNTHIA results are reported
    on (`fishertune.data.labels.CLASS_SUBSETS`); classes absent from both prediction and label are skipped,
    as in the 19-class mIoU. Classes are the dataset's (`dataset.classes`, Cityscapes-19 by default), which
    the model must predict; a custom class set has no subsets."""
    classes = getattr(dataset, "classes", CITYSCAPES)
    predicted = getattr(model, "num_classes", classes.num_classes)
    if predicted != classes.num_classes:
        name = getattr(dataset, "name", "the data")
        raise FisherTuneError(f"the model predicts {predicted} classes but {name} has {classes.num_classes}")
    was_training = model.training
    model.eval()
    shard = list(range(distributed.rank(), len(dataset), distributed.world_size()))
    loader = DataLoader(dataset, batch_size=settings.batch_size, sampler=shard, num_workers=settings.workers,
                        generator=torch.Generator().manual_seed(0))  # leaves the global RNG untouched
    matrix = ConfusionMatrix(classes.num_classes)
    counts = torch.zeros(2, len(dataset), classes.num_classes, dtype=torch.int64)  # this process's rows
    done = 0
    name = getattr(dataset, "name", "data")
    for batch in tqdm(loader, desc=f"eval {name}", disable=not (progress and distributed.is_main()),
                      leave=False):
        with autocast(device, settings.inference.amp):
            logits = model.predict(batch["image"].to(device), **settings.inference.kwargs())
        prediction = logits.argmax(1)
        matrix.update(prediction, batch["label"])
        if per_image:
            rows = shard[done:done + len(prediction)]
            counts[:, rows] = torch.stack(per_image_counts(prediction, batch["label"], classes.num_classes))
            done += len(prediction)
    matrix.all_reduce()
    model.train(was_training)
    if int(matrix.matrix.sum()) == 0:  # mIoU would be NaN: refuse rather than write NaN into results
        raise InputError(f"{name}: every label pixel is {IGNORE_INDEX} (ignore); there is nothing to score")
    iou = matrix.iou()
    subsets = {}
    for subset in ("16", "13") if classes.is_cityscapes else ():
        values = iou[list(CLASS_SUBSETS[subset])]
        values = values[~values.isnan()]
        subsets[subset] = float(100 * values.mean()) if len(values) else None
    result = {"miou": matrix.miou(),
              "iou": {name: None if v.isnan() else float(100 * v) for name, v in zip(classes.names, iou)},
              "pixel_accuracy": matrix.pixel_accuracy(),
              "images": len(dataset),
              "miou_subsets": subsets,
              "label_table": getattr(dataset, "label_table", "")}
    if per_image:
        intersection, union = distributed.all_reduce_sum(counts)  # each image counted by one process
        result["per_image"] = {"intersection": intersection, "union": union}
    return result


def evaluate_targets(model: nn.Module, datasets: dict[str, Dataset], settings: EvalSettings,
                     device: torch.device, progress: bool = False, per_image: bool = False) -> dict:
    """Per-dataset results and their mean: {"target_miou": {name: miou}, "mean_target_miou",
    "per_class_iou", "subset_miou": {name: {"16", "13"}}, "label_tables": {name: label table}}, plus
    "per_image": {name: {"intersection", "union"}} with per_image=True (see `evaluate`)."""
    results = {name: evaluate(model, data, settings, device, progress, per_image)
               for name, data in datasets.items()}
    target = {name: r["miou"] for name, r in results.items()}
    out = {"target_miou": target,
           "mean_target_miou": sum(target.values()) / len(target) if target else None,
           "per_class_iou": {name: r["iou"] for name, r in results.items()},
           "subset_miou": {name: r["miou_subsets"] for name, r in results.items()},
           "label_tables": {name: r["label_table"] for name, r in results.items()}}
    if per_image:
        out["per_image"] = {name: r["per_image"] for name, r in results.items()}
    return out


def save_per_image(path, per_image: dict[str, dict[str, torch.Tensor]]) -> None:
    """`evaluate_targets(..., per_image=True)["per_image"]` as one safetensors file (PER_IMAGE_FILE)."""
    save_tensors(path, {f"{name}/{kind}": tensor for name, counts in per_image.items()
                        for kind, tensor in counts.items()})


def load_per_image(path) -> dict[str, dict[str, torch.Tensor]]:
    """{domain: {"intersection", "union"}} from a PER_IMAGE_FILE."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(path).items():
        name, _, kind = key.rpartition("/")
        out.setdefault(name, {})[kind] = tensor
    return out
