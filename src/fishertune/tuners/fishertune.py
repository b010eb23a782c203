"""FisherTune (CVPR 2025) under the tuner interface: DR-FIM selection, mask growth, sparse delta.

A thin adapter from the segmentor to `fishertune.sparse.MaskSelector` (docs/method.md): `prepare`
estimates, batch by batch, the clean curvature and the curvature under the DSU feature perturbation of
`perturb_layers` (the empirical Fisher, or the variational posterior precision when `variational` is
ivon or vogn), combines them into DR-FIM scores and selects δ(0); `after_step` re-estimates and grows the
mask towards the budget every R steps (δ(t) = δ_max − (δ_max − δ_min)·e^(−t/T)). The options are
MaskSelectorConfig's, plus the mask baselines' `budget` (which sets ratio or count), with `perturb_layers`
that may name backbone blocks by index (default: the first two blocks, the "early blocks" of §1.2) and
candidates restricted to the backbone. The defaults are FisherTune as shipped (SHIPPED, and the schedule
and budget below), chosen on source data by the criterion of docs/method.md §8.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

from fishertune.errors import FisherTuneError
from fishertune.sparse import MaskSelectorConfig
from fishertune.sparse.options import DomainWeighting, Normalization, Variational
from fishertune.tuners.base import register_tuner
from fishertune.tuners.blocks import layer_module_names
from fishertune.tuners.mask_methods import BACKBONE, MaskTuner, budget_fields, check_budget

SHIPPED = {"variational": "vogn", "var_samples": 2, "normalize": "per_tensor", "domain_weight": "paper"}
"""The estimate and combination the criterion of docs/method.md §8 chose (source data only)."""
DEFAULT_BUDGET = 0.05


@dataclass
class FisherTuneTunerConfig(MaskSelectorConfig):
    """MaskSelectorConfig's options (docs/method.md), plus the mask baselines' `budget`, block-index
    `perturb_layers` and candidates restricted to the backbone. The defaults are FisherTune as shipped,
    chosen by the source-only criterion of docs/method.md §8; a protocol's yaml sets only what it changes
    (learning rates, perturbation layers)."""

    DEPRECATED_OPTIONS: ClassVar[dict[str, str]] = {"ratio": "budget", "count": "budget"}
    """Options a run config should no longer set, and the one to set instead (read until 0.2; a saved
    tuner config holds every field, so only a run config's own options are warned about)."""

    budget: float | None = field(default=None, metadata={  # None: DEFAULT_BUDGET, or the old ratio/count
        "help": "final selected backbone weights δ_max: a fraction of the candidates (<= 1) or a count "
                "(> 1); sets ratio or count, as for the other mask methods (default 5%)"})
    perturb_layers: list = field(default_factory=lambda: [0, 1], metadata={
        "help": "where the DSU perturbation of the domain term acts: backbone block indices or module "
                "names; in a run config, train.perturb.layers unless set here (one perturbation)"})
    include: list[str] | None = field(default=None, metadata={
        "help": "glob patterns of candidate parameter names (default: every backbone weight)"})
    exclude: list[str] = field(default_factory=lambda: ["*embeddings*"], metadata={
        "help": "glob patterns never selected (default: the patch/position embeddings and cls token, "
                "which a Fisher selection otherwise spends a tenth of its budget on)"})
    variational: Variational = field(default=SHIPPED["variational"], metadata={
        "help": "the curvature: vogn (shipped: the posterior's Fisher under antithetic weight noise), ivon "
                "(IVON's Hessian estimate, the paper's form; unreliable at affordable sample counts) or "
                "off (the plain Fisher)"})
    var_samples: int = field(default=SHIPPED["var_samples"], metadata={
        "help": "weight samples per batch (vogn: in antithetic pairs; ivon: antithetic pairs)"})
    normalize: Normalization = field(default=SHIPPED["normalize"], metadata={
        "help": "how the two DR-FIM terms share one scale: none (the paper's raw sum), mean, per_tensor, "
                "rank"})
    domain_weight: DomainWeighting = field(default=SHIPPED["domain_weight"], metadata={
        "help": "reading of the draw weight exp(−(ε_μ+ε_σ)): paper (per batch), sample (per sample), "
                "abs_mean (ablation)"})
    chunk_size: int | None = field(default=2, metadata={
        "help": "samples per pass of the per-sample gradients: 2 (the layerwise backend) keeps the demo's "
                "peak memory at 1.21x full fine-tuning's, against 1.47x for its whole batch of 8, at the "
                "same speed (benchmarks/results/layerwise; docs/performance.md)"})
    growth_start: float | None = field(default=0.4, metadata={
        "help": "δ_min as a fraction of the budget: the selection grows from 40% of it"})
    growth_fraction: float | None = field(default=0.25, metadata={
        "help": "T of δ(t) as a fraction of the training steps"})
    update_fraction: float | None = field(default=0.25, metadata={
        "help": "re-estimate and grow every R steps, R as a fraction of the training steps"})

    def __post_init__(self):
        # a schedule given in steps replaces the default given as a fraction of the steps
        if self.growth_steps:
            self.growth_fraction = None
        if self.update_every:
            self.update_fraction = None
        if self.budget is None:  # the old size options (a saved config before 0.1.1 holds ratio = 0.05)
            self.budget = next((v for v in (self.ratio, self.count) if v is not None), DEFAULT_BUDGET)
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
    Defaults (FisherTuneTunerConfig): the shipped estimate and combination, perturbation in blocks 0-1,
    5% of the backbone without embeddings, growing from 40% of it."""

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
