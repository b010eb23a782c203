"""Fine-tuning methods under one interface; importing this package fills the registry `TUNERS`."""

from fishertune.tuners import (  # noqa: F401  (registration)
    adaptformer,
    fishertune,
    frozen,
    full,
    lora,
    mask_methods,
    rein,
    vpt,
)
from fishertune.tuners.base import TUNERS, Tuner, build_tuner, config_help, load_tuner, register_tuner
from fishertune.tuners.mask_methods import load_selection

__all__ = ["TUNERS", "Tuner", "build_tuner", "config_help", "load_tuner", "load_selection", "register_tuner"]
