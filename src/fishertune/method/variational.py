"""Variational stabilisation of the Fisher (IVON-style), so that few noisy batches give steadier scores.

The posterior over the weights is q(θ) = N(μ, diag(Λ)⁻¹) with μ the current weights, the prior is
N(θ_pt, τ²I) (θ_pt = the weights at the time of the call), and the precision is re-estimated from squared
per-sample gradients taken at weights sampled from q:

    for each batch b:   σ² = 1/Λ = τ²γ / (γ + τ²h)         (Λ = τ⁻² + h/γ)
                        θ_s = μ + σ ⊙ ξ_s, ξ_s ~ N(0, I),   s = 1..samples
                        ĝ²_b = mean over s of the per-sample Fisher of batch b at θ_s
                        h ← β h + (1 − β) ĝ²_b              (EMA, bias-corrected: h / (1 − β^k))
    stabilised Fisher  = γ (Λ − τ⁻²) = h.

h starts at 0 (the noise uses the bias-corrected h), so the first batch is measured with the prior noise
σ = τ. γ is the data scale of the precision (IVON's 1/effective sample size): the larger γ, the wider the
posterior. With beta=None the EMA is replaced by the sample-count-weighted running mean, so that the
estimate weights all batches alike.

Zero-noise limit: γ = 0 (or τ = 0) gives σ = 0, every θ_s = μ bit-exactly, and the result is exactly the
plain per-sample Fisher of the batch (β ∈ [0,1), one batch) or of all batches (beta=None).
The weights are restored bit-exactly after sampling.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.method.fisher import LossFn, _named_params, fisher_sums
from fishertune.method.perturbation import FeaturePerturbation

DEFAULT_GAMMA = 1e-4   # data scale: the posterior of a weight whose Fisher is h has precision τ⁻² + h/γ
DEFAULT_TAU = 1e-3     # prior std around the weights, also the first batch's noise
DEFAULT_SAMPLES = 2    # weight samples per batch
DEFAULT_BETA = 0.9     # EMA decay of the squared gradients


def variational_fisher(model: nn.Module, batches: Iterable[Any], loss_fn: LossFn,
                       params: Sequence[str] | None = None, gamma: float = DEFAULT_GAMMA,
                       tau: float = DEFAULT_TAU, samples: int = DEFAULT_SAMPLES,
                       beta: float | None = DEFAULT_BETA, seed: int = 0, per_sample: bool = True,
                       backend: str = "auto", chunk_size: int | None = None,
                       perturbation: FeaturePerturbation | None = None) -> dict[str, torch.Tensor]:
    """The stabilised Fisher γ(Λ − τ⁻²) of the module docstring, float32, one tensor per parameter.

    The other arguments are those of `empirical_fisher`, applied at every weight sample."""
    if gamma < 0 or tau < 0 or samples < 1 or (beta is not None and not 0 <= beta < 1):
        raise FisherTuneError(f"variational settings out of range: gamma={gamma} >= 0, tau={tau} >= 0, "
                              f"samples={samples} >= 1, beta={beta} in [0, 1) or None")
    named = _named_params(model, params)
    names = list(named)
    mean = {name: p.detach().clone() for name, p in named.items()}
    h = {name: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for name, p in named.items()}
    generator = torch.Generator().manual_seed(seed)
    seen, batches_done = 0, 0
    try:
        for batch in batches:
            scale = 1.0 if beta is None or batches_done == 0 else 1 - beta ** batches_done
            std = {name: _posterior_std(h[name] / scale, gamma, tau) for name in names}
            total: dict[str, torch.Tensor] = {}
            count = 0
            for _ in range(samples):
                with torch.no_grad():
                    for name, p in named.items():
                        noise = torch.randn(p.shape, generator=generator).to(p.device)
                        p.copy_((mean[name].float() + std[name] * noise).to(p.dtype))
                sums, count = fisher_sums(model, [batch], loss_fn, names, per_sample, backend, chunk_size,
                                          perturbation)
                for name in names:
                    total[name] = total[name] + sums[name] if name in total else sums[name]
            batch_fisher = {name: total[name] / (samples * count) for name in names}
            batches_done += 1
            seen += count
            for name in names:
                if beta is None:
                    h[name].add_(batch_fisher[name] - h[name], alpha=count / seen)
                else:
                    h[name].mul_(beta).add_(batch_fisher[name], alpha=1 - beta)
    finally:
        with torch.no_grad():
            for name, p in named.items():
                p.copy_(mean[name])
    if batches_done == 0:
        raise FisherTuneError("no batches: the variational Fisher needs at least one batch")
    correction = 1.0 if beta is None else 1 - beta ** batches_done
    return {name: h[name] / correction for name in names}


def _posterior_std(h: torch.Tensor, gamma: float, tau: float) -> torch.Tensor:
    """sqrt(1/Λ) = sqrt(τ²γ / (γ + τ²h)), exactly 0 when γ = 0 or τ = 0."""
    numerator = tau * tau * gamma
    if numerator == 0.0:
        return torch.zeros_like(h)
    return (numerator / (gamma + tau * tau * h)).sqrt()
