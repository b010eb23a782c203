"""The model of a run from its validated Config: the base segmentor (backbone + head), the tuner's checked
options, the tuner. Both sides of a run use it: training and evaluation (`fishertune.engine.build`) and the
export folder, which rebuilds the base from its config (`fishertune.engine.export`)."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from torch import nn

import fishertune.models as models  # called as models.build_backbone: a test may replace it there
from fishertune.data.classes import ClassSet
from fishertune.engine.config import Config
from fishertune.errors import FisherTuneError
from fishertune.models.heads import check_head_options
from fishertune.models.offline_dinov2 import sha256_of
from fishertune.models.segmentor import assemble_segmentor
from fishertune.tuners import TUNERS, build_tuner
from fishertune.tuners.base import make_config


def run_classes(config: Config) -> ClassSet:
    """The run's class set: `data.classes`, Cityscapes-19 by default."""
    return ClassSet.from_config(config.data.classes)


def check_weights_file(config: Config) -> None:
    """Refuse a weights file whose sha256 differs from `model.weights_sha256` (when the config pins it)."""
    m = config.model
    if m.weights_sha256 is None:
        return
    path = Path(m.weights or "").expanduser()
    if not path.is_file():
        raise FisherTuneError(f"model.weights_sha256 is set but model.weights {m.weights!r} is not a file")
    digest = sha256_of(path)
    if digest != m.weights_sha256:
        raise FisherTuneError(f"backbone weights {path} have sha256 {digest[:12]}..., expected "
                              f"{m.weights_sha256[:12]}... (model.weights_sha256): a different base model")


def build_base(config: Config) -> nn.Module:
    """The segmentor of `model` (backbone + fresh head, `data.classes` outputs), before any tuner."""
    classes = run_classes(config)
    check_weights_file(config)
    m = config.model  # validated when the config loaded: built as it is, not re-checked as a dict
    check_head_options(m.head, m.head_options)  # before the (possibly large) backbone is built
    backbone = models.build_backbone(m.backbone, m.weights, m.backbone_config or None, m.out_indices)
    return assemble_segmentor(backbone, m.head, classes.num_classes, **m.head_options)


def method_options(config: Config) -> dict:
    """The tuner's options, checked before the (possibly large) model is built. Unless the method's
    options set them, a method with a `seed` option gets the run's seed (masks, draws and inits follow
    train.seed), and one with `perturb_layers` (FisherTune's domain-shift simulation) perturbs where
    training does (`train.perturb.layers`): the user names the DSU perturbation's layers once. An option
    the tuner has deprecated (its config's `DEPRECATED_OPTIONS`) gets a FutureWarning naming the new one."""
    options = dict(config.method.options)
    if config.method.name in TUNERS:
        config_class = TUNERS[config.method.name].config_class
        for old, new in getattr(config_class, "DEPRECATED_OPTIONS", {}).items():
            if old in options:
                warnings.warn(f"method.options.{old}: set method.options.{new} instead ({old} is read until "
                              f"0.2)", FutureWarning, stacklevel=2)
        names = {f.name for f in dataclasses.fields(config_class)}
        for name, value in (("seed", config.train.seed), ("perturb_layers", config.train.perturb.layers)):
            if name in names:
                options.setdefault(name, value)
        make_config(config_class, options, config.method.name)
    return options


def build_model(config: Config) -> tuple[nn.Module, object]:
    """(segmentor, tuner): the base segmentor from `model`, wrapped by the tuner of `method`."""
    options = method_options(config)
    model = build_base(config)
    tuner = build_tuner(config.method.name, model, **options)
    return model, tuner
