"""Turn a validated Config into the objects of a run: segmentor, tuner, datasets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from fishertune.engine.config import Config
from fishertune.errors import FisherTuneError

TRAIN_CLASSES = 19


def build_model(config: Config) -> tuple[nn.Module, object]:
    """(segmentor, tuner): the base segmentor from `model`, wrapped by the tuner of `method`."""
    from fishertune.models import build_segmentor
    from fishertune.tuners import TUNERS, build_tuner
    from fishertune.tuners.base import make_config

    options = dict(config.method.options)
    if config.method.name in TUNERS:  # options checked before the (possibly large) model is built
        config_class = TUNERS[config.method.name].config_class
        if "seed" in {f.name for f in dataclasses.fields(config_class)}:
            options.setdefault("seed", config.train.seed)  # masks, draws and inits follow the run's seed
        make_config(config_class, options, config.method.name)
    m = config.model
    backbone = {"name": m.backbone, "weights": m.weights, "config": m.backbone_config or None,
                "out_indices": m.out_indices}
    head = {"name": m.head, **m.head_options}
    model = build_segmentor(backbone, head, num_classes=TRAIN_CLASSES)
    tuner = build_tuner(config.method.name, model, **options)
    return model, tuner


def check_options(options: dict, function, where: str, skip: tuple[str, ...] = ()) -> None:
    """Every key of `options` must be a keyword of `function` (a class: its __init__)."""
    import difflib
    import inspect

    valid = [name for name in inspect.signature(function).parameters if name not in skip]
    for key in options:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {where}.{near[0]}?)" if near else f"; valid: {', '.join(valid)}"
            raise FisherTuneError(f"unknown option {where}.{key}{hint}")


def build_train_dataset(config: Config):
    """The source training set (one or several sources, see `build_sources`) with the seeded training
    augmentation (random crop, flip)."""
    from fishertune.data.datasets import build_sources

    if not config.data.train:
        raise FisherTuneError("data.train is not set: give the source training data as folder:PATH")
    specs = config.data.train if isinstance(config.data.train, list) else [config.data.train]
    transform = None
    if config.data.crop:
        from fishertune.data.transforms import TrainTransform

        check_options(config.data.augment, TrainTransform, "data.augment", skip=("crop_size",))
        transform = TrainTransform(config.data.crop, **config.data.augment)
    dataset = build_sources(specs, config.data.sampling, transform=transform, seed=config.train.seed)
    if len(dataset) < config.data.batch_size:
        raise FisherTuneError(f"data.train has {len(dataset)} images, fewer than data.batch_size "
                              f"{config.data.batch_size}")
    return dataset


def build_eval_datasets(specs: list[str]) -> dict[str, object]:
    """{display name: dataset} for evaluation specs; two specs with one name get numbered."""
    from fishertune.data.datasets import build_dataset

    datasets: dict[str, object] = {}
    for spec in specs:
        dataset = build_dataset(spec)
        name, n = dataset.name, 2
        while name in datasets:
            name, n = f"{dataset.name}-{n}", n + 1
        datasets[name] = dataset
    return datasets


def load_run(run_dir: str | Path, device=None) -> tuple[Config, nn.Module]:
    """(config, model in eval mode) of a finished run folder: config.yaml + model.safetensors."""
    from fishertune.engine.checkpoint import load_model
    from fishertune.engine.config import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FisherTuneError(f"{run_dir} is not a run folder (no config.yaml)")
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise FisherTuneError(f"{run_dir} has no model.safetensors: the run has not finished "
                              f"(continue it with `fishertune train ... --out {run_dir} --resume`)")
    config = load_config(run_dir / "config.yaml")
    model, _ = build_model(config)
    load_model(model, weights)
    if device is not None:
        model.to(device)
    return config, model.eval()
