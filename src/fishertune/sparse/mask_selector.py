"""MaskSelector: estimate DR-FIM, select the top entries as masks, train them with MaskedAdamW, grow the
masks, save a sparse delta. It is the sparse core on any nn.Module; the `fishertune` tuner (and the mask
baselines) run it on a segmentor's backbone.

    selector = MaskSelector(model, MaskSelectorConfig(ratio=0.05, perturb_layers=["blocks.0", "blocks.1"]))
    # (warm-up of the head is the caller's)
    selector.estimate(batches, loss_fn)        # task and domain terms batch by batch, DR-FIM scores
    selector.select(step=0)                    # masks of size δ(0)
    optimizer = selector.build_optimizer(model.named_parameters(), lr=2e-5)
    for step in range(steps):
        ...; optimizer.step()
        selector.after_step(step, steps, batches, loss_fn, optimizer)   # every R steps: re-estimate, grow
    selector.save_delta("delta.safetensors")

The hooks take their arguments in the order of the tuner interface's (`fishertune.tuners.Tuner`):
`after_step(step, total_steps, batches, loss_fn, optimizer)`, and `build_optimizer`'s settings are
keyword-only, named as there. `FisherTuner` and `FisherTuneConfig` are the deprecated names of
`MaskSelector` and `MaskSelectorConfig` (until 0.2; `FisherTuner` keeps its old `after_step` order).

Estimation runs with the model in eval() (restored afterwards), so BatchNorm does not couple the samples
and dropout does not randomise them. The base values of every selected entry are kept (memory ∝ the
selection) so that the untouched base can be rebuilt for the delta's hashes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fishertune.errors import FisherTuneError
from fishertune.sparse.delta import save_delta
from fishertune.sparse.dr_fim import DomainTerm, add_normalized, draw_weight, normalize_term, unflatten
from fishertune.sparse.fisher import LossFn, RunningFisher, empirical_fisher
from fishertune.sparse.flat_index import flat_indices
from fishertune.sparse.layerwise import LayerwiseUnsupported, layer_plan
from fishertune.sparse.masked_adamw import MaskedAdamW
from fishertune.sparse.options import (
    DomainWeighting,
    Granularity,
    Normalization,
    PerSampleBackend,
    Reestimate,
    Scope,
    Score,
    Variational,
    check_option,
)
from fishertune.sparse.perturbation import FeaturePerturbation
from fishertune.sparse.schedule import grow_masks, growth_ratio
from fishertune.sparse.selection import candidate_names
from fishertune.sparse.sparse_linear import RowSparseLinears
from fishertune.sparse.variational import (
    DEFAULT_GAMMA,
    DEFAULT_SAMPLES,
    DEFAULT_TAU,
    VariationalCurvature,
    VariationalSettings,
)

# Independent random streams of one estimate, all derived from the config's seed and the estimate's
# number k (so a re-estimate draws afresh): seed_stream(seed, stream, k).
RANDOM_SCORES, PERTURBATION_DRAWS, WEIGHT_SAMPLES, SPLIT_HALVES = 1, 2, 3, 4


HISTORY_FIELDS = {"step": int, "ratio": float, "selected": int}
"""One `MaskSelector.history` record per selection: the step, δ(step) and the selected count."""


def _steps(total_steps: int | None, what: str) -> int:
    if total_steps is None:
        raise FisherTuneError(f"{what} needs the number of training steps (after_step's total_steps)")
    return total_steps


def growth_time(config: MaskSelectorConfig, total_steps: int | None) -> float:
    """T in steps: growth_steps, or growth_fraction of the training steps."""
    if config.growth_fraction is None:
        return config.growth_steps
    return config.growth_fraction * _steps(total_steps, "growth_fraction")


def update_interval(config: MaskSelectorConfig, total_steps: int | None) -> int:
    """R in steps (0 = never): update_every, or update_fraction of the training steps (at least 1)."""
    if config.update_fraction is None:
        return config.update_every
    return max(1, round(config.update_fraction * _steps(total_steps, "update_fraction")))


def estimate_count(config: MaskSelectorConfig, total_steps: int) -> int:
    """How many estimates a run of `total_steps` steps makes: prepare's, and one per mask update with exact
    re-estimation (none after the last step)."""
    every = update_interval(config, total_steps)
    if every <= 0 or config.reestimate != "exact" or config.score == "random":
        return 1
    return 1 + (total_steps - 1) // every


def passes_per_estimate(config: MaskSelectorConfig, batches: int) -> int:
    """Forward-backward passes over one batch that one estimate makes on `batches` batches: per batch and
    stream (clean, perturbed), one for the Fisher, var_samples for vogn, two per antithetic pair for ivon;
    plus a forward pass per batch recording the perturbation's uncertainty (counted as a whole pass)."""
    if config.score == "random":
        return 0
    per_stream = {"off": 1, "vogn": config.var_samples, "ivon": 2 * config.var_samples}[config.variational]
    streams = 1 if config.score == "fim" else 2
    return batches * (streams * per_stream + (streams - 1))


def seed_stream(seed: int, stream: int, estimate: int) -> int:
    """A 63-bit seed for one random stream of one estimate (numpy's SeedSequence mixes the three)."""
    return int(np.random.SeedSequence([seed, stream, estimate]).generate_state(2, np.uint64)[0] >> 1)


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class MaskSelectorConfig:
    """Settings of the mask selection (FisherTune's DR-FIM and its controls); every field's
    `metadata["help"]` says what it does."""

    RENAMED: ClassVar[dict[str, str]] = {"selection": "score"}
    """Old option names still read from saved configs (fishertune.validation.from_dict), until 0.2."""

    ratio: float | None = field(default=None, metadata=_help(
        "Final selected fraction δ_max of the candidate entries; 0.05 when neither ratio nor count "
        "is given."))
    count: int | None = field(default=None, metadata=_help(
        "Final number of selected candidate entries, instead of ratio."))
    ratio_min: float | None = field(default=None, metadata=_help(
        "Initial fraction δ_min for mask growth; None = growth_start's, or no growth."))
    growth_start: float | None = field(default=None, metadata=_help(
        "δ_min as a fraction of the final budget δ_max (when ratio_min is not given); None = no growth."))
    growth_steps: float = field(default=0.0, metadata=_help(
        "Time constant T of δ(t) = δ_max − (δ_max − δ_min)·exp(−t/T), in optimiser steps."))
    update_every: int = field(default=0, metadata=_help(
        "R: every R steps grow the masks to δ(t) (and re-estimate if reestimate); 0 = never."))
    growth_fraction: float | None = field(default=None, metadata=_help(
        "T as a fraction of the training steps (instead of growth_steps), so one setting scales to every "
        "protocol's length."))
    update_fraction: float | None = field(default=None, metadata=_help(
        "R as a fraction of the training steps (instead of update_every), rounded, at least 1 step."))
    reestimate: bool | Reestimate = field(default="exact", metadata=_help(
        "Scores of a mask update: exact (estimate again, as prepare did), running (the mean squared "
        "training gradient since the last update: no extra passes, a different estimator, docs/method.md) "
        "or off (grow by the first scores); true = exact, false = off."))
    include: list[str] | None = field(default=None, metadata=_help(
        "Glob patterns of candidate parameter names; None = every parameter."))
    exclude: list[str] = field(default_factory=list, metadata=_help(
        "Glob patterns of parameter names never selected (e.g. '*embeddings*')."))
    granularity: Granularity = field(default="element", metadata=_help(
        "Selection unit: element, row or tensor."))
    scope: Scope = field(default="global", metadata=_help(
        "Top-k over all candidates (global) or within each tensor (per_tensor)."))
    max_per_tensor: float | None = field(default=None, metadata=_help(
        "Cap on the selected fraction of any one tensor; None = no cap."))
    score: Score = field(default="dr_fim", metadata=_help(
        "What the selection ranks by: dr_fim (task + domain term), fim (task term: the clean Fisher), "
        "delta_f (the domain term alone, the paper's ΔF) or random (same budget, seeded)."))
    domain_weight: DomainWeighting = field(default="paper", metadata=_help(
        "The draw weight w = exp(−(ε_μ+ε_σ)): paper (each batch's domain term, from the mean of its "
        "signed per-channel draws), sample (one scalar draw per sample and perturbed module; each "
        "sample's perturbed Fisher weighted by its own w_n) or abs_mean (the earlier exp(−(|ε_μ|+|ε_σ|)), "
        "≈ constant; for the ablation)."))
    normalize: Normalization = field(default="mean", metadata=_help(
        "How DR-FIM puts F and the relative change on one scale: none (the paper's raw sum), mean, "
        "per_tensor (each tensor's mean) or rank."))
    eps_ratio: float = field(default=1e-3, metadata=_help(
        "DR-FIM ε as a fraction of the mean clean Fisher over the candidates."))
    perturb_layers: list[str] = field(default_factory=list, metadata=_help(
        "Module names or globs whose outputs get the DSU perturbation (needed by dr_fim)."))
    alpha: float = field(default=1.0, metadata=_help("Perturbation strength α."))
    per_sample: bool = field(default=True, metadata=_help(
        "Exact per-sample Fisher (True) or squared mini-batch gradients (False, cheaper)."))
    backend: PerSampleBackend = field(default="layerwise", metadata=_help(
        "How the exact Fisher gets each sample's gradient: layerwise (one batched pass; where every "
        "candidate is a linear, LayerNorm or layer-scale parameter, else as vmap), vmap or loop."))
    chunk_size: int | None = field(default=None, metadata=_help(
        "Samples per pass of the exact Fisher (a memory bound); None = the backend's own: the whole batch "
        "for layerwise (activations as in a training step), one sample for vmap (one copy of the "
        "candidates' gradients)."))
    variational: Variational = field(default="off", metadata=_help(
        "Stabilised estimate γ(Λ − τ⁻²) of the posterior precision Λ instead of F: ivon (IVON's "
        "reparameterised Hessian estimate, the paper's form), vogn (squared per-sample gradients at "
        "sampled weights) or off (the plain empirical Fisher)."))
    var_gamma: float = field(default=DEFAULT_GAMMA, metadata=_help(
        "Variational data scale γ (1 / effective sample size)."))
    var_tau: float = field(default=DEFAULT_TAU, metadata=_help(
        "Variational prior std τ around the current weights; δ = γ/τ² floors the domain ratio."))
    var_floor: float | None = field(default=None, metadata=_help(
        "Empirical-Bayes prior: δ = γ/τ² as this multiple of the mean curvature over the candidates "
        "(γ follows the estimate batch by batch); None = the fixed var_gamma."))
    var_samples: int = field(default=DEFAULT_SAMPLES, metadata=_help(
        "Weight samples per batch (ivon: antithetic pairs)."))
    seed: int = field(default=0, metadata=_help(
        "Seed of perturbation draws, weight samples and random scores."))

    def __post_init__(self) -> None:
        if isinstance(self.reestimate, bool):
            self.reestimate = "exact" if self.reestimate else "off"
        if self.ratio is not None and self.count is not None:
            raise FisherTuneError("MaskSelectorConfig: give exactly one of ratio or count")
        if self.ratio is None and self.count is None:
            self.ratio = 0.05
        if self.ratio is not None and not 0 <= self.ratio <= 1:
            raise FisherTuneError(f"MaskSelectorConfig: ratio must be in [0, 1], got {self.ratio}")
        if self.count is not None and self.count < 0:
            raise FisherTuneError(f"MaskSelectorConfig: count must be >= 0, got {self.count}")
        for name, option_type in (("score", Score), ("domain_weight", DomainWeighting),
                                  ("variational", Variational), ("normalize", Normalization),
                                  ("granularity", Granularity), ("scope", Scope),
                                  ("backend", PerSampleBackend),
                                  ("reestimate", Reestimate)):
            check_option(getattr(self, name), option_type, name, where="MaskSelectorConfig")
        for name, value, low, inclusive in (("update_every", self.update_every, 0, True),
                                             ("growth_steps", self.growth_steps, 0, True),
                                             ("growth_fraction", self.growth_fraction, 0, False),
                                             ("growth_start", self.growth_start, 0, True),
                                             ("update_fraction", self.update_fraction, 0, False),
                                             ("alpha", self.alpha, 0, True),
                                             ("eps_ratio", self.eps_ratio, 0, False),
                                             ("var_gamma", self.var_gamma, 0, True),
                                             ("var_tau", self.var_tau, 0, True),
                                             ("var_samples", self.var_samples, 1, True),
                                             ("var_floor", self.var_floor, 0, False),
                                             ("chunk_size", self.chunk_size, 1, True),
                                             ("max_per_tensor", self.max_per_tensor, 0, False)):
            if value is not None and (value < low if inclusive else value <= low):
                raise FisherTuneError(f"MaskSelectorConfig: {name} must be {'>=' if inclusive else '>'} "
                                      f"{low}, got {value}")
        for fraction, steps in (("growth_fraction", "growth_steps"), ("update_fraction", "update_every"),
                                ("growth_start", None)):
            if steps and getattr(self, fraction) is not None and getattr(self, steps):
                raise FisherTuneError(f"MaskSelectorConfig: give {steps} or {fraction}, not both")
            if getattr(self, fraction) is not None and getattr(self, fraction) > 1:
                raise FisherTuneError(f"MaskSelectorConfig: {fraction} must be <= 1, "
                                      f"got {getattr(self, fraction)}")
        if self.reestimate == "running" and self.score == "random":
            raise FisherTuneError("MaskSelectorConfig: reestimate 'running' needs gradient-based scores, "
                                  "not score 'random'")
        if self.max_per_tensor is not None and self.max_per_tensor > 1:
            raise FisherTuneError(f"MaskSelectorConfig: max_per_tensor must be <= 1, "
                                  f"got {self.max_per_tensor}")
        if self.ratio_min is not None and not 0 <= self.ratio_min <= (self.ratio if self.ratio is not None
                                                                      else 1):
            raise FisherTuneError(f"MaskSelectorConfig: ratio_min must be in [0, ratio], "
                                  f"got {self.ratio_min}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MaskSelector:
    """Orchestrates estimate → select → masked training → growth → sparse delta on any nn.Module."""

    def __init__(self, model: nn.Module, config: MaskSelectorConfig | None = None, keep_terms: bool = False):
        self.model = model
        self.config = config or MaskSelectorConfig()
        self.candidates = candidate_names([n for n, _ in model.named_parameters()],
                                          self.config.include, self.config.exclude)
        if not self.candidates:
            raise FisherTuneError("MaskSelector: no candidate parameters left after include/exclude")
        self.total_candidates = sum(p.numel() for n, p in model.named_parameters() if n in self.candidates)
        self.scores: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}
        self.fisher_perturbed: dict[str, torch.Tensor] = {}
        # flat T(A) and D over the candidates after estimate(), with keep_terms (two more buffers of their
        # size: without it the scores are made in D's buffer)
        self.keep_terms = keep_terms
        self.terms: dict[str, torch.Tensor] = {}
        self.draws: list[dict[str, float]] = []  # per estimation batch: signed draws and weight w_b
        self.history: list[dict[str, Any]] = []
        self.base_values: dict[str, torch.Tensor] = {}
        self._base_index: dict[str, torch.Tensor] = {}
        self._estimates = 0
        self.running_sum: dict[str, torch.Tensor] = {}  # reestimate "running": Σ g² since the last update
        self.running_steps = 0
        self.total_steps: int | None = None  # told by after_step; resolves the schedule's fractions
        self.show_progress = False  # a progress bar per estimate (the trainer turns it on)

    # -- scores ---------------------------------------------------------------------------------------
    def estimate(self, batches: Iterable[Any], loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """Compute the selection scores from `batches` (docs/method.md): the task term T(A) of the clean
        curvature A, the domain term D accumulated batch by batch under the DSU perturbation, and
        DR = T(A) + D (or one of them, by `score`). Keeps A, A' and the draws for inspection until
        `release_estimates()`."""
        cfg = self.config
        batches = list(batches)
        self._estimates += 1
        self.scores = {}  # the previous scores are replaced: do not hold both at once
        if cfg.score == "random":
            generator = torch.Generator().manual_seed(seed_stream(cfg.seed, RANDOM_SCORES, self._estimates))
            params = dict(self.model.named_parameters())
            self.scores = {n: torch.rand(params[n].shape, generator=generator).to(params[n].device)
                           for n in self.candidates}
            return self.scores
        was_training = self.model.training
        self.model.eval()
        try:
            batches = tqdm(batches, desc=f"estimate {self._estimates} ({cfg.score})", leave=False,
                           disable=not self.show_progress)
            if cfg.score == "fim" and cfg.variational == "off":
                self.fisher = self.scores = empirical_fisher(self.model, batches, loss_fn, self.candidates,
                                                             **self._fisher_options())
            elif cfg.score == "fim":
                clean = self._curvature(loss_fn)
                for batch in batches:
                    clean.update(batch)
                self.fisher = self.scores = clean.value()
            else:
                self.scores = self._domain_related(batches, loss_fn)
            return self.scores
        finally:
            self.model.train(was_training)

    def _domain_related(self, batches: tqdm, loss_fn: LossFn) -> dict[str, torch.Tensor]:
        cfg = self.config
        if not cfg.perturb_layers:
            raise FisherTuneError(f"score {cfg.score!r} needs perturb_layers "
                                  "(module names to perturb)")
        by_sample = cfg.domain_weight == "sample"
        perturbation = FeaturePerturbation(self.model, cfg.perturb_layers, cfg.alpha,
                                           seed=seed_stream(cfg.seed, PERTURBATION_DRAWS, self._estimates),
                                           weigh_samples=by_sample)
        clean, moved = self._curvature(loss_fn), self._curvature(loss_fn)  # same weight samples
        names = self.candidates
        domain = DomainTerm(cfg.normalize, cfg.eps_ratio, self._sizes())
        self.draws = []
        with perturbation:
            # DSU's Σ of these batches, used by the batches of one of per-sample estimation
            with perturbation.recording(), torch.no_grad():
                for batch in batches.iterable:
                    loss_fn(self.model, batch)
            for batch in batches:
                perturbation.enabled = False
                clean.update(batch)
                perturbation.enabled = True
                logged = len(perturbation.sample_weight_log)
                moved.update(batch, perturbation)
                draws = perturbation.take_draws()
                # the sample reading weighs inside the perturbed Fisher (w_n), so the batch's term is not
                weight = 1.0 if by_sample else draw_weight(draws, cfg.domain_weight)
                domain.add(clean.flat, moved.flat, weight, clean.prior_floor, clean.ratio_scale)
                self.draws.append({"eps_mu": draws.eps_mu, "eps_sigma": draws.eps_sigma,
                                   "abs_mu": draws.abs_mu, "abs_sigma": draws.abs_sigma, "weight": weight,
                                   "sample_weights": perturbation.sample_weight_log[logged:]})
        self.fisher, self.fisher_perturbed = clean.value(), moved.value()
        like = {n: self.fisher[n] for n in names}
        domain_term = domain.take_value()
        if self.keep_terms:
            task = normalize_term(clean.flat, cfg.normalize, self._sizes())
            self.terms = {"task": task, "domain": domain_term}
        if cfg.score == "delta_f":
            return unflatten(domain_term, like)
        if self.keep_terms:
            return unflatten(self.terms["task"] + domain_term, like)
        return unflatten(add_normalized(domain_term, clean.flat, cfg.normalize, self._sizes()), like)

    def _sizes(self) -> list[int]:
        """The candidates' lengths in the flat terms (their order)."""
        params = dict(self.model.named_parameters())
        return [params[n].numel() for n in self.candidates]

    def _curvature(self, loss_fn: LossFn) -> RunningFisher | VariationalCurvature:
        """The running clean (or perturbed) curvature: the empirical Fisher, or the variational h. The
        clean and perturbed ones draw the same weight samples, so |A − A'| holds no differences but the
        perturbation's."""
        cfg = self.config
        options = self._fisher_options()
        if cfg.variational == "off":
            return RunningFisher(self.model, loss_fn, self.candidates, **options)
        settings = VariationalSettings(cfg.variational, cfg.var_gamma, cfg.var_tau, cfg.var_samples,
                                       seed_stream(cfg.seed, WEIGHT_SAMPLES, self._estimates), cfg.var_floor)
        return VariationalCurvature(self.model, loss_fn, self.candidates, settings, **options)

    def _fisher_options(self) -> dict[str, Any]:
        """`fisher_sums`' per-sample options; the layerwise backend only where every candidate allows it."""
        cfg = self.config
        backend = cfg.backend
        if backend == "layerwise":
            try:
                layer_plan(self.model, self.candidates)
            except LayerwiseUnsupported:
                backend = "auto"
        chunk_size = cfg.chunk_size or (None if backend == "layerwise" else 1)
        return dict(per_sample=cfg.per_sample, backend=backend, chunk_size=chunk_size)

    def release_estimates(self) -> None:
        """Drop the curvature and terms kept for inspection (memory ∝ the candidates); the scores stay."""
        self.fisher, self.fisher_perturbed, self.terms = {}, {}, {}

    # -- selection ------------------------------------------------------------------------------------
    def ratio_at(self, step: int) -> float:
        """δ(step) as a fraction of the candidate entries."""
        cfg = self.config
        final = cfg.ratio if cfg.ratio is not None else cfg.count / self.total_candidates
        if final > 1:
            raise FisherTuneError(f"count {cfg.count} exceeds the {self.total_candidates} candidate entries")
        start = cfg.ratio_min if cfg.ratio_min is not None else (
            None if cfg.growth_start is None else cfg.growth_start * final)
        if start is None:
            return final
        if step == 0 and cfg.growth_fraction is not None:  # δ(0) = δ_min needs no T (T > 0 here)
            return start
        return growth_ratio(step, start, final, growth_time(cfg, self.total_steps))

    def select(self, step: int = 0) -> dict[str, torch.Tensor]:
        """Masks of size δ(step) containing the previous masks (growth), recorded in `history`."""
        if not self.scores:
            raise FisherTuneError("call estimate() before select()")
        cfg = self.config
        ratio = self.ratio_at(step)  # a count c becomes c/N, which select_topk rounds back to exactly c
        self.masks = grow_masks(self.masks, self.scores, ratio, granularity=cfg.granularity, scope=cfg.scope,
                                max_per_tensor=cfg.max_per_tensor)
        self._remember_base()
        selected = self.num_selected()
        self.history.append({"step": step, "ratio": ratio, "selected": selected})
        return self.masks

    def _remember_base(self) -> None:
        """Keep the pretrained values of newly selected entries (they have not been trained yet)."""
        params = dict(self.model.named_parameters())
        for name, mask in self.masks.items():
            index = flat_indices(mask)
            values = params[name].detach().reshape(-1)[index].clone()
            if name in self.base_values:
                values[torch.searchsorted(index, self._base_index[name])] = self.base_values[name]
            self.base_values[name] = values
            self._base_index[name] = index

    def num_selected(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    # -- training -------------------------------------------------------------------------------------
    def build_optimizer(self, named_params: Iterable, *, lr: float = 1e-4, weight_decay: float = 1e-2,
                        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> MaskedAdamW:
        """MaskedAdamW over `named_params` (names or groups as MaskedAdamW takes): candidates are masked,
        the parameters `include` names but `exclude` removes are frozen (never selected, so they stay
        pretrained), the others (the head) dense. A candidate requires grad only while it has a selected
        entry."""
        if not self.masks:
            raise FisherTuneError("call select() before build_optimizer()")
        groups = list(named_params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        names = [n for n, _ in self.model.named_parameters()]
        excluded = set(candidate_names(names, self.config.include)) - set(self.candidates)
        kept = []
        for group in groups:
            params = list(group["params"])
            for name, param in params:
                if name in excluded:
                    param.requires_grad_(False)
            if trained := [(name, param) for name, param in params if name not in excluded]:
                kept.append({**group, "params": trained})
        optimizer = MaskedAdamW(kept, self.masks, lr=lr,
                                weight_decay=weight_decay, betas=betas, eps=eps)
        self._set_requires_grad()
        return optimizer

    def _set_requires_grad(self) -> None:
        """Tensors with nothing selected compute no weight gradient (and blocks below the lowest selected
        entry then need no backward at all); mask growth turns them on when they gain an entry. The
        Fisher takes gradients of frozen candidates all the same (it names them explicitly). With
        reestimate "running", every candidate computes its whole weight gradient: the running g² needs the
        gradients of the entries that are not selected yet."""
        params = dict(self.model.named_parameters())
        running = self._running()
        for name in self.candidates:
            params[name].requires_grad_(running or bool(self.masks[name].any()))
        if self.config.granularity == "row" and not running:  # selected rows only get weight gradients
            RowSparseLinears(self.model).update(self.masks)

    def _running(self) -> bool:
        """Whether mask updates take the running g² (so every step records it)."""
        cfg = self.config
        return cfg.reestimate == "running" and (cfg.update_every > 0 or cfg.update_fraction is not None)

    @torch.no_grad()
    def record_gradients(self) -> None:
        """Reestimate "running": add the squared gradient g² of every candidate (after backward, before the
        gradients are cleared). A step with a non-finite gradient (a skipped fp16 step) is not counted;
        a candidate without a gradient adds zeros."""
        params = dict(self.model.named_parameters())
        grads = {n: params[n].grad for n in self.candidates if params[n].grad is not None}
        if not grads or not bool(torch.stack([torch.isfinite(g).all() for g in grads.values()]).all()):
            return
        if not self.running_sum:
            self.running_sum = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in self.candidates}
        names = list(grads)
        squares = [grads[n].float() for n in names]
        torch._foreach_addcmul_([self.running_sum[n] for n in names], squares, squares)
        self.running_steps += 1

    def take_running_scores(self) -> dict[str, torch.Tensor]:
        """The running scores (1/S) Σ_s g_s² over the S steps recorded since the last call, which restarts
        the sums."""
        if not self.running_steps:
            raise FisherTuneError("reestimate 'running': no training gradient recorded since the last update")
        scores = {n: total.div_(self.running_steps) for n, total in self.running_sum.items()}
        self.running_sum, self.running_steps = {}, 0
        return scores

    def after_step(self, step: int, total_steps: int | None, batches: Iterable[Any], loss_fn: LossFn,
                   optimizer: MaskedAdamW) -> None:
        """Every `update_every` steps (counting step from 0): re-estimate (if asked) and grow to δ(step+1).
        Nothing happens after the last of `total_steps` steps (None: no last step): entries added then
        would never train. With reestimate "running" every step's gradients are recorded first
        (record_gradients). An exact re-estimate frees the step's gradients first (they are spent once the
        optimiser has stepped), so that the estimate's buffers take their place rather than add to them."""
        if total_steps is not None:
            self.total_steps = total_steps
        every = update_interval(self.config, self.total_steps)
        if self._running():
            self.record_gradients()
        if every <= 0 or (step + 1) % every or (total_steps is not None and step + 1 >= total_steps):
            return
        if self.config.reestimate == "exact":
            optimizer.zero_grad(set_to_none=True)
            self.estimate(batches, loss_fn)
        elif self.config.reestimate == "running":
            self.scores = self.take_running_scores()
        self.select(step + 1)
        optimizer.update_masks(self.masks)
        self._set_requires_grad()

    # -- saving and reporting -------------------------------------------------------------------------
    def base_state(self) -> dict[str, torch.Tensor]:
        """The untouched base tensors of the selected parameters: current values with the kept base values
        written back at the selected entries."""
        params = dict(self.model.named_parameters())
        out = {}
        for name, values in self.base_values.items():
            base = params[name].detach().clone()
            base.view(-1)[self._base_index[name]] = values
            out[name] = base
        return out

    def save_delta(self, path) -> dict:
        """Write the selected entries as a sparse delta (see fishertune.sparse.delta)."""
        return save_delta(self.model, self.base_state(), self.masks, path)

    def print_trainable_parameters(self) -> None:
        total = sum(p.numel() for p in self.model.parameters())
        selected = self.num_selected()
        print(f"selected params: {selected:,} || candidate params: {self.total_candidates:,} || "
              f"all params: {total:,} || "
              f"selected% of candidates: {100 * selected / self.total_candidates:.4f}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to resume: scores, masks, kept base values, the running g² sums and the selection
        history."""
        out = {}
        for name in self.masks:
            out[f"mask.{name}"] = self.masks[name]
            out[f"base.{name}"] = self.base_values[name]
        for name, s in self.scores.items():
            out[f"score.{name}"] = s
        for name, total in self.running_sum.items():
            out[f"running.{name}"] = total
        out["estimates"] = torch.tensor(self._estimates)  # seeds the next estimate's draws
        out["running_steps"] = torch.tensor(self.running_steps)
        out["history"] = torch.tensor([[h[key] for key in HISTORY_FIELDS] for h in self.history],
                                      dtype=torch.float64).reshape(-1, len(HISTORY_FIELDS))
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.masks = {k.removeprefix("mask."): v.bool() for k, v in state.items() if k.startswith("mask.")}
        self.scores = {k.removeprefix("score."): v for k, v in state.items() if k.startswith("score.")}
        self.base_values = {k.removeprefix("base."): v for k, v in state.items() if k.startswith("base.")}
        self._base_index = {n: flat_indices(m) for n, m in self.masks.items()}
        self._estimates = int(state.get("estimates", self._estimates))
        self.running_sum = {k.removeprefix("running."): v for k, v in state.items()
                            if k.startswith("running.")}
        self.running_steps = int(state.get("running_steps", 0))
        if "history" in state:  # older checkpoints do not hold it
            self.history = [{key: kind(value) for (key, kind), value in zip(HISTORY_FIELDS.items(), row)}
                            for row in state["history"].tolist()]


# -- deprecated names (until 0.2) -----------------------------------------------------------------------
class _DeprecatedFisherTuner(MaskSelector):
    """`FisherTuner`, the old name of MaskSelector, with its old `after_step` argument order."""

    def after_step(self, step: int, batches: Iterable[Any], loss_fn: LossFn, optimizer: MaskedAdamW,
                   total_steps: int | None = None) -> None:
        super().after_step(step, total_steps, batches, loss_fn, optimizer)


DEPRECATED_NAMES = {"FisherTuner": ("MaskSelector", _DeprecatedFisherTuner),
                    "FisherTuneConfig": ("MaskSelectorConfig", MaskSelectorConfig)}


def deprecated_name(name: str) -> Any:
    """The object behind a deprecated name, with a DeprecationWarning that names its replacement."""
    new, value = DEPRECATED_NAMES[name]
    warnings.warn(f"fishertune.{name} is deprecated and will be removed in 0.2; use {new}"
                  + (" (after_step now takes (step, total_steps, batches, loss_fn, optimizer))"
                     if name == "FisherTuner" else ""), DeprecationWarning, stacklevel=3)
    return value
