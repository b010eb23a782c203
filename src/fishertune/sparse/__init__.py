"""The model-agnostic sparse-mask core of FisherTune (scores, selection, masked optimiser, sparse delta):
works on any nn.Module with any per-sample loss. Formerly `fishertune.method` (deprecated alias until 0.2)."""

from fishertune.sparse.delta import load_delta, read_delta_config, save_delta
from fishertune.sparse.dr_fim import dr_fim
from fishertune.sparse.fisher import empirical_fisher
from fishertune.sparse.mask_selector import (
    DEPRECATED_NAMES,
    MaskSelector,
    MaskSelectorConfig,
    deprecated_name,
)
from fishertune.sparse.masked_adamw import MaskedAdamW
from fishertune.sparse.perturbation import FeaturePerturbation
from fishertune.sparse.schedule import grow_masks, growth_ratio
from fishertune.sparse.selection import candidate_names, select_topk
from fishertune.sparse.variational import VariationalSettings, variational_fisher

__all__ = ["FeaturePerturbation", "MaskSelector", "MaskSelectorConfig", "MaskedAdamW", "candidate_names",
           "dr_fim", "empirical_fisher", "grow_masks", "growth_ratio", "load_delta", "read_delta_config",
           "save_delta", "select_topk", "VariationalSettings", "variational_fisher"]


def __getattr__(name: str):
    """`FisherTuner` and `FisherTuneConfig`, deprecated names of MaskSelector(Config), warn when used."""
    if name in DEPRECATED_NAMES:
        return deprecated_name(name)
    raise AttributeError(f"module 'fishertune.sparse' has no attribute {name!r}")
