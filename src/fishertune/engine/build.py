"""Turn a validated Config into the objects of a run: segmentor, tuner, datasets; and load a finished run.

The model itself is built by `fishertune.engine.assemble` (re-exported here: `build_model`, `build_base`,
`method_options`, `run_classes`, `check_weights_file`), which the export folder's loader uses too.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from torch import nn

from fishertune.data.classes import CITYSCAPES, ClassSet
from fishertune.data.datasets import build_dataset, concatenate, hold_out
from fishertune.data.image_io import set_max_pixels
from fishertune.data.specs import HoldOut
from fishertune.data.transforms import TrainTransform
from fishertune.engine.assemble import (
    build_base,
    build_model,
    check_weights_file,
    method_options,
    run_classes,
)
from fishertune.engine.checkpoint import model_state
from fishertune.engine.config import Config, load_config
from fishertune.engine.export import is_export, load_export
from fishertune.errors import FisherTuneError, InputError
from fishertune.registry import nearest
from fishertune.tensor_files import checked_tensors

__all__ = ["build_base", "build_eval_datasets", "build_model", "build_source_datasets", "check_options",
           "check_weights_file", "load_run", "method_options", "run_classes"]


def check_options(options: dict, function, where: str, skip: tuple[str, ...] = ()) -> None:
    """Every key of `options` must be a keyword of `function` (a class: its __init__)."""
    valid = [name for name in inspect.signature(function).parameters if name not in skip]
    for key in options:
        if key not in valid:
            near = nearest(key, valid)
            hint = f" (did you mean {where}.{near}?)" if near else f"; valid: {', '.join(valid)}"
            raise FisherTuneError(f"unknown option {where}.{key}{hint}")


def build_source_datasets(config: Config) -> tuple[object, dict[str, object]]:
    """(training set, {name: source validation set}): the sources of `data.train` (one or several, drawn
    per `data.sampling`) with the seeded training augmentation (random crop, flip), and `data.val`: a spec,
    or `holdout:N`, a slice of the sources kept out of training (`fishertune.data.datasets.hold_out`),
    named `source_val` and evaluated without the augmentation. Either may be refused before training."""
    set_max_pixels(config.data.max_pixels)  # for every image the run reads from here on
    data = config.data
    if not data.train:
        raise FisherTuneError("data.train is not set: give the source training data as folder:PATH")
    check_options(data.augment, TrainTransform, "data.augment", skip=("crop_size",))
    if data.augment and not data.crop:
        raise InputError("data.augment applies with data.crop only (full images train without augmentation): "
                         "set data.crop or remove data.augment")
    transform = TrainTransform(data.crop, **data.augment) if data.crop else None
    classes = run_classes(config)
    parts = [build_dataset(spec, classes=classes) for spec in data.sources]
    holdout = HoldOut.parse(data.val) if data.val else None
    if holdout is not None:
        parts, val = hold_out(parts, holdout)
        val_sets = {val.name: val}
    else:
        val_sets = build_eval_datasets([data.val], classes) if data.val else {}
    dataset = concatenate(parts, data.sampling, transform, config.train.seed)
    if len(dataset) < data.batch_size:
        raise FisherTuneError(f"data.train has {len(dataset)} images, fewer than data.batch_size "
                              f"{data.batch_size}")
    return dataset, val_sets


def build_eval_datasets(specs: list[str], classes: ClassSet = CITYSCAPES) -> dict[str, object]:
    """{display name: dataset} for evaluation specs; two specs with one name get numbered."""
    datasets: dict[str, object] = {}
    for spec in specs:
        dataset = build_dataset(spec, classes=classes)
        name, n = dataset.name, 2
        while name in datasets:
            name, n = f"{dataset.name}-{n}", n + 1
        datasets[name] = dataset
    return datasets


def load_run(run_dir: str | Path, device=None, backbone: str | None = None) -> tuple[Config, nn.Module]:
    """(config, model in eval mode) of a finished run folder (config.yaml + model.safetensors) or of a
    folder written by `fishertune export`, whose base backbone `backbone` may relocate (see
    `fishertune.engine.export`)."""
    run_dir = Path(run_dir)
    if is_export(run_dir):
        config, model = load_export(run_dir, backbone)
        return config, (model.to(device) if device is not None else model).eval()
    if backbone is not None:
        raise FisherTuneError(f"{run_dir} is a run folder; a backbone location applies to export folders "
                              f"only")
    if not (run_dir / "config.yaml").is_file():
        raise FisherTuneError(f"{run_dir} is not a run folder (no config.yaml)")
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise FisherTuneError(f"{run_dir} has no model.safetensors: the run has not finished "
                              f"(continue it with `fishertune train ... --out {run_dir} --resume`)")
    config = load_config(run_dir / "config.yaml")
    model, _ = build_model(config)
    # names, shapes, dtypes and finite values: a finished run's model must be exactly what was trained
    model.load_state_dict(checked_tensors(weights, model_state(model), "model weights"), strict=False)
    if device is not None:
        model.to(device)
    return config, model.eval()
