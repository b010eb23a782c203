"""FisherTune (CVPR 2025) under the tuner interface: DR-FIM selection, mask growth, sparse delta.

A thin adapter from the segmentor to `fishertune.method.MaskSelector` (docs/method.md): `prepare`
estimates, batch by batch, the clean curvature and the curvature under the DSU feature perturbation of
`perturb_layers` (the empirical Fisher, or the variational posterior precision when `variational` is
ivon or vogn), combines them into DR-FIM scores and selects δ(0); `after_step` grows the mask
towards the budget every `update_every` steps (δ(t) = δ_max − (δ_max − δ_min)·e^(−t/T)), re-estimating if
asked. The options are MaskSelectorConfig's, plus the mask baselines' `budget` (which sets ratio or count),
with `perturb_layers` that may name backbone blocks by index (default: the first two blocks, the "early
blocks" of §1.2) and candidates restricted to the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from fishertune.errors import FisherTuneError
from fishertune.method import MaskSelectorConfig
from fishertune.tuners.base import register_tuner
from fishertune.tuners.blocks import layer_module_names
from fishertune.tuners.mask_methods import BACKBONE, MaskTuner, budget_fields, check_budget


@dataclass
class FisherTuneTunerConfig(MaskSelectorConfig):
    """MaskSelectorConfig's options (docs/method.md), plus the mask baselines' `budget`, block-index
    `perturb_layers` and candidates restricted to the backbone."""

    budget: float | None = field(default=None, metadata={
        "help": "final selected backbone weights δ_max: a fraction of the candidates (<= 1) or a count "
                "(> 1); sets ratio or count, as for the other mask methods"})
    perturb_layers: list = field(default_factory=lambda: [0, 1], metadata={
        "help": "where the DSU perturbation acts: backbone block indices or module names"})
    include: list[str] | None = field(default=None, metadata={
        "help": "glob patterns of candidate parameter names (default: every backbone weight)"})

    def __post_init__(self):
        if self.budget is not None:
            check_budget(self.budget)
            implied = budget_fields(self.budget)
            if (self.ratio, self.count) not in ((None, None), (implied["ratio"], implied["count"])):
                raise FisherTuneError("fishertune: give budget, or ratio/count, not both")
            self.ratio, self.count = implied["ratio"], implied["count"]
        super().__post_init__()


@register_tuner
class FisherTuneTuner(MaskTuner):
    """Trains the backbone entries DR-FIM selects, growing from `ratio_min` to the budget (default 5%);
    every other weight stays bit-exactly pretrained. FisherTune (CVPR 2025), as formulated in docs/method.md.
    Defaults: DR-FIM selection, mean normalisation, perturbation in blocks 0-1, plain Fisher
    (`variational: off`; the shipped methods/fishertune.yaml uses ivon)."""

    name = "fishertune"
    paper = "FisherTune (CVPR 2025), this project's formulation (docs/method.md)"
    config_class = FisherTuneTunerConfig

    def selector_config(self) -> MaskSelectorConfig:
        c = self.config
        options = {f.name: getattr(c, f.name) for f in fields(MaskSelectorConfig)}
        options.update(include=c.include or [BACKBONE], exclude=[*c.exclude, "head.*"],
                       perturb_layers=layer_module_names(self.model, c.perturb_layers,
                                                                 "perturb_layers"))
        return MaskSelectorConfig(**options)
