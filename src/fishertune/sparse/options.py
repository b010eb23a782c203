"""The sparse core's option strings as Literal types, and the one check of a value against one of them.

The config dataclasses annotate their fields with these types, so a run config's values are checked by
`fishertune.validation` (with a nearest-name hint) before the method is built; the functions of the core
check what they are called with by `check_option`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from fishertune.errors import UsageError

Score = Literal["dr_fim", "fim", "delta_f", "random"]
"""What a selection ranks by: DR-FIM (task + domain term), the clean Fisher, the domain term alone, random."""
Normalization = Literal["none", "mean", "per_tensor", "rank"]
"""How DR-FIM puts each term on one scale (fishertune.sparse.dr_fim)."""
DomainWeighting = Literal["paper", "sample", "abs_mean"]
"""The domain term's weight: w_b of each batch's signed channel draws, w_n of each sample's scalar draws
(weighing its perturbed Fisher), or w_b of the draws' magnitudes (ablation)."""
Variational = Literal["off", "ivon", "vogn"]
"""The curvature behind DR-FIM: the plain empirical Fisher, or a variational estimate."""
Curvature = Literal["ivon", "vogn"]
"""The variational curvature estimate (fishertune.sparse.variational)."""
PerSampleBackend = Literal["layerwise", "vmap", "loop"]
"""How the exact per-sample Fisher is computed (fishertune.sparse.fisher)."""
Granularity = Literal["element", "row", "tensor"]
"""The unit of selection (fishertune.sparse.selection)."""
Scope = Literal["global", "per_tensor"]
"""Top-k over all candidates or within each tensor."""
Reestimate = Literal["exact", "running", "off"]
"""Mask updates re-estimate by fresh Fisher passes, from the running g² of training, or not at all."""


def choices(option_type: Any) -> tuple[str, ...]:
    """The strings of a Literal option type, in order."""
    return get_args(option_type)


def check_option(value: Any, option_type: Any, what: str, where: str = "") -> str:
    """`value` when it is one of `option_type`'s strings; else a UsageError
    "[where: ]unknown <what> 'value'; choose one of a, b, c"."""
    valid = choices(option_type)
    if value not in valid:
        prefix = f"{where}: " if where else ""
        raise UsageError(f"{prefix}unknown {what} {value!r}; choose one of {', '.join(valid)}")
    return value
