"""Fine-tuning methods under one interface; importing this package fills the registry `TUNERS`."""

from fishertune.tuners import adaptformer, frozen, full, lora, rein, vpt  # noqa: F401  (registration)
from fishertune.tuners.base import TUNERS, Tuner, build_tuner, config_help, load_tuner, register_tuner

__all__ = ["TUNERS", "Tuner", "build_tuner", "config_help", "load_tuner", "register_tuner"]
