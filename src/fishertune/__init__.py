"""FisherTune: Fisher-guided robust fine-tuning of Vision Foundation Models for DGSS."""

from fishertune.errors import FisherTuneError
from fishertune.method import (
    FeaturePerturbation,
    FisherTuneConfig,
    FisherTuner,
    MaskedAdamW,
    candidate_names,
    dr_fim,
    empirical_fisher,
    grow_masks,
    growth_ratio,
    load_delta,
    read_delta_config,
    save_delta,
    select_topk,
    variational_fisher,
)

__version__ = "0.1.0"

__all__ = ["FeaturePerturbation", "FisherTuneConfig", "FisherTuneError", "FisherTuner", "MaskedAdamW",
           "__version__", "candidate_names", "dr_fim", "empirical_fisher", "grow_masks", "growth_ratio",
           "load_delta", "read_delta_config", "save_delta", "select_topk", "variational_fisher"]
