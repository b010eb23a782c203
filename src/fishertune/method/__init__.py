"""The model-agnostic FisherTune core: works on any nn.Module with any per-sample loss."""

from fishertune.method.delta import load_delta, read_delta_config, save_delta
from fishertune.method.dr_fim import dr_fim
from fishertune.method.fisher import empirical_fisher
from fishertune.method.mask_selector import (
    DEPRECATED_NAMES,
    MaskSelector,
    MaskSelectorConfig,
    deprecated_name,
)
from fishertune.method.masked_adamw import MaskedAdamW
from fishertune.method.perturbation import FeaturePerturbation
from fishertune.method.schedule import grow_masks, growth_ratio
from fishertune.method.selection import candidate_names, select_topk
from fishertune.method.variational import VariationalSettings, variational_fisher

__all__ = ["FeaturePerturbation", "MaskSelector", "MaskSelectorConfig", "MaskedAdamW", "candidate_names",
           "dr_fim", "empirical_fisher", "grow_masks", "growth_ratio", "load_delta", "read_delta_config",
           "save_delta", "select_topk", "VariationalSettings", "variational_fisher"]


def __getattr__(name: str):
    """`FisherTuner` and `FisherTuneConfig`, deprecated names of MaskSelector(Config), warn when used."""
    if name in DEPRECATED_NAMES:
        return deprecated_name(name)
    raise AttributeError(f"module 'fishertune.method' has no attribute {name!r}")
