"""Variational stabilisation of the curvature: the posterior precision Λ of docs/method.md §4.

The posterior over the weights is q(θ) = N(m, diag(Λ)⁻¹), the prior N(θ_pt, τ²I) around the weights at
the time of the estimate. The mean m is *held* at the current weights (estimation must not move a weight
that will stay pretrained); only the precision is learnt. In IVON's parameterisation (Shen et al., ICML
2024) with data scale γ (1 / effective sample size):

    Λ = τ⁻² + h/γ,   σ² = 1/Λ = γτ² / (γ + τ²h),   δ = γ/τ² (the prior precision in units of h)

and the stabilised curvature the DR-FIM formula uses is γ(Λ − τ⁻²) = h. For each batch b (k-th):

    θ_s = m + σ ⊙ ξ_s, ξ_s ~ N(0, I)                       (weights sampled from q)
    ĥ_b = curvature measured at the θ_s (below)
    h  ← h + ρ(ĥ_b − h) + ½ρ²(h − ĥ_b)² / (h + δ)          (IVON's natural-gradient ELBO step;
                                                            ρ = n_b / samples seen so far)

ρ = n_b / N_seen makes h the sample-weighted average of the batches' ĥ (with few estimation batches
IVON's β₂ ≈ 1 would leave h at its initial value). The last term is IVON's Riemannian correction: it
keeps h + δ > 0 (so Λ > 0) when ĥ can be negative, and is 0 for the squared-gradient curvature.
h starts at 0, so the first batch is measured at the prior noise σ = τ.

Curvature estimates ĥ (`curvature`):
- "ivon" (the paper's form; IVON's reparameterised Hessian estimate): with antithetic pairs ±ξ_s,
  ĥ = mean_s (∇ℓ̄(m + σξ_s) − ∇ℓ̄(m − σξ_s)) ⊙ ξ_s / (2σ), ℓ̄ the batch's mean loss. By Bonnet's theorem
  its expectation is E_q[diag ∇²ℓ̄]; the pair cancels the gradient at m, so the estimate stays finite as
  σ → 0, where its expectation tends to diag ∇²ℓ̄(m) — the Hessian, which equals the Fisher only where the
  Gauss-Newton / Fisher identity holds. It is a Hutchinson-type estimate: one draw carries the
  off-diagonal curvature as noise, so it needs many samples to be reliable (docs/method.md measures it).
- "vogn" (the earlier estimator, named for what it is: VOGN, Osawa et al. 2019): ĥ = the per-sample
  Fisher (1/n) Σ_n g_n(θ_s)² of the batch, averaged over the weight samples, drawn in antithetic pairs
  θ = m ± σξ (samples 2k are k pairs; an odd last sample is unpaired; the second member is made as the
  first reflected about m, m − (θ₊ − m), which is m − σξ up to one rounding). For small σ,
  g(m ± σξ) ≈ g ± σHξ, so a pair's mean square is g² + (σHξ)²: the first-order noise 2σg·Hξ of a single
  draw cancels, which is what keeps the estimate as reliable as the plain Fisher (docs/method.md §4
  measures it). At zero posterior noise (γ = 0 or τ = 0, so σ = 0 and θ_s = m) h is exactly the
  empirical Fisher F of the batches seen.

The weights are restored bit-exactly after every sample. With an attached perturbation, both members of
an antithetic pair see the same DSU draws (presampled), so the pair still cancels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.sparse.batching import batch_size
from fishertune.sparse.dr_fim import unflatten
from fishertune.sparse.fisher import (
    LossFn,
    _all_reduce_flat,
    _named_params,
    _presampled,
    _requiring_grad,
    _sum_over_processes,
    _world_count,
    fisher_sums,
)
from fishertune.sparse.options import Curvature, check_option
from fishertune.sparse.perturbation import FeaturePerturbation

DEFAULT_GAMMA = 1e-4   # data scale γ: a weight whose curvature is h has precision τ⁻² + h/γ
DEFAULT_TAU = 1e-3     # prior std τ around the weights, also the first batch's noise
DEFAULT_SAMPLES = 2    # weight samples (ivon: antithetic pairs) per batch
STEP_CHUNK = 1 << 20   # entries per chunk of the elementwise ELBO step


@dataclass(frozen=True)
class VariationalSettings:
    """The posterior's settings (module docstring), checked when made: the curvature estimate ĥ ("ivon" or
    "vogn"), the data scale γ, the prior std τ, the weight samples per batch (ivon: antithetic pairs) and
    the seed of the weight draws."""

    curvature: Curvature = "ivon"
    gamma: float = DEFAULT_GAMMA
    tau: float = DEFAULT_TAU
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    floor: float | None = None
    """Empirical Bayes: the prior precision δ = γ/τ² as this multiple of the candidates' mean h, by setting
    γ = floor·mean(h)·τ² after every batch (the first batch is measured at σ = τ); None = the fixed γ."""

    def __post_init__(self) -> None:
        check_option(self.curvature, Curvature, "variational curvature")
        if self.gamma < 0 or self.tau < 0 or self.samples < 1:
            raise FisherTuneError(f"variational settings out of range: gamma={self.gamma} >= 0, "
                                  f"tau={self.tau} >= 0, samples={self.samples} >= 1")
        if self.floor is not None and (self.floor <= 0 or self.tau <= 0):
            raise FisherTuneError(f"variational floor {self.floor} needs floor > 0 and tau > 0")
        if self.curvature == "ivon" and self.gamma * self.tau == 0:
            raise FisherTuneError("the ivon curvature needs posterior noise: gamma > 0 and tau > 0 "
                                  "(use curvature vogn for the zero-noise limit)")


class VariationalCurvature:
    """The running h = γ(Λ − τ⁻²) of one data stream (clean, or under a perturbation), batch by batch.
    `fisher_options`: `fisher_sums`' per_sample, backend and chunk_size, used by the vogn curvature.

    `flat` holds h of every parameter, in the order of `names`, as one float32 tensor; `value()` gives
    per-parameter views of it. An update holds, besides h, the mean (the weights, restored bit for bit);
    the vogn curvature adds its squares into h's own buffer (`_fold_squared_gradients`), the ivon one
    also holds the noise ξ, the gradient difference (accumulated in the parameters' .grad, which are
    restored) and the batch's sums. σ and ξ are made tensor by tensor."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, names: Sequence[str],
                 settings: VariationalSettings = VariationalSettings(), **fisher_options: Any):
        self.model, self.loss_fn, self.curvature = model, loss_fn, settings.curvature
        self.gamma, self.tau, self.samples = settings.gamma, settings.tau, settings.samples
        self.floor = settings.floor
        self.fisher_options = fisher_options
        self.named = _named_params(model, names)
        device = next(iter(self.named.values())).device if self.named else None
        self.flat = torch.zeros(sum(p.numel() for p in self.named.values()), dtype=torch.float32,
                                device=device)
        self.h = unflatten(self.flat, self.named)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.seen = 0

    @property
    def prior_floor(self) -> float:
        """δ = γ/τ²: the prior precision τ⁻² in units of h (0 when γ = 0, ∞ when only τ = 0)."""
        if self.gamma == 0:
            return 0.0
        return self.gamma / (self.tau * self.tau) if self.tau > 0 else math.inf

    @property
    def ratio_scale(self) -> float:
        """γ: the paper's stabilised domain term is γ·|Λ − Λ'| / (min(Λ, Λ') + ε/γ) = γ·R(h, h'; δ)."""
        return self.gamma

    def value(self) -> dict[str, torch.Tensor]:
        return self.h

    def posterior_std(self, name: str, h: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """σ = sqrt(γτ² / (γ + τ²h)), exactly 0 when γ = 0 or τ = 0; h of `name` from `h` if given (e.g. a
        copy of the curvature), else the current one."""
        h = (self.h if h is None else h)[name]
        numerator = self.tau * self.tau * self.gamma
        if numerator == 0.0:
            return torch.zeros_like(h)
        return h.mul(self.tau * self.tau).add_(self.gamma).reciprocal_().mul_(numerator).sqrt_()

    def update(self, batch: Any, perturbation: FeaturePerturbation | None = None) -> None:
        """One ELBO step of h with the curvature measured on `batch` (under `perturbation` if given)."""
        mean = {n: p.detach().clone() for n, p in self.named.items()}
        try:
            if self.curvature == "vogn":
                self._fold_squared_gradients(batch, mean, perturbation)
            else:
                estimate, count = self._reparameterised_hessian(batch, mean, perturbation)
        finally:
            self._restore_weights(mean)
        del mean
        if self.curvature == "ivon":
            self.seen += count
            rho = count / self.seen
            for h, step in zip(self.flat.split(STEP_CHUNK), estimate.split(STEP_CHUNK)):
                step.sub_(h)  # ĥ − h, in the estimate's buffer; chunks keep the temporaries small
                correction = step.square().mul_(0.5 * rho * rho).div_(h + self.prior_floor)
                h.add_(step.mul_(rho).add_(correction))
        if self.floor is not None:
            mean = float(self.flat.mean())
            if mean > 0:
                self.gamma = self.floor * mean * self.tau * self.tau

    def _noise(self) -> Iterator[tuple[str, torch.Tensor]]:
        """ξ tensor by tensor, in the candidates' order (only one tensor's noise is held at a time; the
        generator's state before the call replays the same ξ)."""
        for name, p in self.named.items():
            yield name, torch.randn(p.shape, generator=self.generator).to(p.device)

    def _replay(self, state: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """The ξ drawn from generator state `state` again."""
        self.generator.set_state(state)
        return self._noise()

    @torch.no_grad()
    def _restore_weights(self, mean) -> None:
        for name, p in self.named.items():
            p.copy_(mean[name])

    @torch.no_grad()
    def _set_weights(self, mean, noise, sign: float, h: dict[str, torch.Tensor] | None = None) -> None:
        """The weights m + sign·σ ⊙ ξ, ξ from the iterator `noise` (name, ξ) in the candidates' order, σ of
        the curvature `h` (posterior_std)."""
        for (name, p), (_, xi) in zip(self.named.items(), noise):
            shift = self.posterior_std(name, h).mul_(xi)
            if sign < 0:
                shift.neg_()
            p.copy_(shift.add_(mean[name].float()))

    @torch.no_grad()
    def _reflect_weights(self, mean) -> None:
        """θ ← m − (θ − m): the other member of an antithetic pair."""
        for name, p in self.named.items():
            p.sub_(mean[name]).neg_().add_(mean[name])

    def _fold_squared_gradients(self, batch, mean, perturbation) -> None:
        """h ← (1 − ρ)h + ρĥ with ĥ = Σ_s Σ_n g_n(θ_s)² / (S·N) (S weight samples, N the batch's samples over
        the processes), the squares added into h's own buffer so that no buffer of the batch's sums is
        held: h is scaled to (1 − ρ)h / c with c = ρ/(S·N) (divided by the number of processes, whose
        buffers are then summed), the squares are added, and the sum is scaled by c.

        Every sample's σ is that of the h before the batch: the first pair is drawn before h is scaled,
        later pairs from a copy of it (held only when there are more). A pair's second member is the first
        reflected about the mean, m − (θ₊ − m), so the two are symmetric about m to one rounding."""
        count, world = _world_count(batch_size(batch), self.flat.device)
        rho = count / (self.seen + count)
        scale = rho / (self.samples * count)
        before = unflatten(self.flat.clone(), self.named) if self.samples > 2 else None
        for s in range(self.samples):
            if s % 2 == 0:
                self._set_weights(mean, self._noise(), 1.0, None if s == 0 else before)
            else:
                self._reflect_weights(mean)
            if s == 0:
                self.flat.mul_((1 - rho) / (scale * world))
            fisher_sums(self.model, [batch], self.loss_fn, list(self.named), perturbation=perturbation,
                        out=self.h, reduce=False, **self.fisher_options)
        del before
        _sum_over_processes(self.flat)
        self.flat.mul_(scale)
        self.seen += count

    def _reparameterised_hessian(self, batch, mean, perturbation) -> tuple[torch.Tensor, int]:
        """mean_s (∇ℓ̄(m + σξ_s) − ∇ℓ̄(m − σξ_s)) ⊙ ξ_s / (2σ), flat. The difference of a pair builds up
        in each parameter's .grad: −∇ℓ̄(m + σξ), then + ∇ℓ̄(m − σξ) by autograd's accumulation (exactly
        the negated difference, so no second gradient is held; in the parameters' dtype, float32 for
        float32 weights)."""
        size = batch_size(batch)
        sums = torch.zeros_like(self.flat)
        parts = unflatten(sums, self.named)
        held = {n: p.grad for n, p in self.named.items()}
        try:
            for _ in range(self.samples):
                state = self.generator.get_state()
                draws, weights = _presampled(perturbation, size)
                for p in self.named.values():
                    p.grad = None
                self._set_weights(mean, self._replay(state), 1.0)
                self._accumulate_gradient(batch, perturbation, draws, weights)
                for p in self.named.values():
                    if p.grad is not None:
                        p.grad.neg_()
                self._set_weights(mean, self._replay(state), -1.0)
                self._accumulate_gradient(batch, perturbation, draws, weights)
                for (name, p), (_, xi) in zip(self.named.items(), self._replay(state)):
                    if p.grad is not None:
                        negated = p.grad.detach().float()
                        parts[name].sub_(negated.mul_(xi).div_(2 * self.posterior_std(name)))
                    p.grad = None
        finally:
            for name, p in self.named.items():
                p.grad = held[name]
        sums.mul_(size)
        count = _all_reduce_flat(sums, size)
        return sums.div_(self.samples * count), count

    def _accumulate_gradient(self, batch, perturbation, draws, weights=None) -> None:
        """∇ℓ̄ of the batch's mean loss (each sample's loss times its weight w_n when the perturbation weighs
        samples), added to the candidates' .grad (nothing else's)."""
        with _requiring_grad(self.named), (perturbation.using(draws) if draws is not None
                                           else nullcontext()):
            losses = self.loss_fn(self.model, batch)
            loss = (losses if weights is None else losses * weights.to(losses)).mean()
            torch.autograd.backward(loss, inputs=list(self.named.values()))


def variational_fisher(model: nn.Module, batches: Iterable[Any], loss_fn: LossFn,
                       params: Sequence[str] | None = None,
                       settings: VariationalSettings = VariationalSettings(),
                       perturbation: FeaturePerturbation | None = None,
                       **fisher_options: Any) -> dict[str, torch.Tensor]:
    """The stabilised curvature γ(Λ − τ⁻²) = h after one ELBO step per batch (module docstring), float32,
    one tensor per parameter (`params` as in `empirical_fisher`; `fisher_options`: its per_sample,
    backend and chunk_size, used by the vogn curvature)."""
    names = list(_named_params(model, params))
    posterior = VariationalCurvature(model, loss_fn, names, settings, **fisher_options)
    for batch in batches:
        posterior.update(batch, perturbation)
    if posterior.seen == 0:
        raise FisherTuneError("no batches: the variational estimate needs at least one batch")
    return posterior.value()
