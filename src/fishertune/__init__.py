"""FisherTune: Fisher-guided robust fine-tuning of Vision Foundation Models for DGSS.

The sparse-mask core (`fishertune.sparse`) is importable from here (`from fishertune import MaskSelector,
select_topk, ...`), and so is `load_pretrained` (a trained segmenter with `.predict(image)`,
docs/export.md); they are loaded on first use, so that `import fishertune` (and `fishertune --help`)
does not pay for torch.
"""

from fishertune.errors import FisherTuneError
from fishertune.version import __version__

_SPARSE_API = ("FeaturePerturbation", "MaskSelector", "MaskSelectorConfig", "MaskedAdamW", "candidate_names",
               "dr_fim", "empirical_fisher", "grow_masks", "growth_ratio", "load_delta", "read_delta_config",
               "save_delta", "select_topk", "VariationalSettings", "variational_fisher")

__all__ = ["FisherTuneError", "__version__", "load_pretrained", *_SPARSE_API]


def __getattr__(name: str):
    # lazy on purpose: `import fishertune` (and `fishertune --help`) must not import torch
    if name in _SPARSE_API:
        from fishertune import sparse

        return getattr(sparse, name)
    if name in ("FisherTuner", "FisherTuneConfig"):  # deprecated names of MaskSelector(Config), until 0.2
        from fishertune.sparse.mask_selector import deprecated_name

        return deprecated_name(name)
    if name == "load_pretrained":
        from fishertune.engine.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'fishertune' has no attribute {name!r}")
