"""Domain-Related Fisher: task importance plus how much that importance moves under a domain perturbation.

The paper's formula, accumulated batch by batch as its Algorithm 1 does (docs/method.md §3):

    R_b  = |A_b − A′_b| / (min(A_b, A′_b) + δ + ε),    ε = eps_ratio · mean(A_b)
    w_b  = exp(−(ε_μ,b + ε_σ,b))
    D    = (1/B) Σ_b w_b · T(s·R_b)                   the domain term (the paper's ΔF alone: D)
    DR   = T(A) + D

A_b and A′_b are the running clean and perturbed curvature after batch b: the empirical Fisher F, F′
(δ = 0, s = 1), or the variationally stabilised A = γ(Λ − τ⁻²) (fishertune.sparse.variational), where
δ = γ/τ² is the prior precision in the same units and s = γ. With Λ = τ⁻² + A/γ this is exactly the
paper's stabilised form γ|Λ − Λ′| / (min(Λ, Λ′) + ε_Λ), ε_Λ = ε/γ: the prior floors the ratio and γ sets
its scale. ε is relative to the scale of A, so the ratio does not explode where A ≈ 0 (never below the
smallest float32).

(ε_μ,b, ε_σ,b) are batch b's *signed* DSU draws, α·mean ε over every channel, module and sample drawn
(`FeaturePerturbation.take_draws`), so w_b = 1 at a zero draw. Averaged over thousands of draws, w_b is
≈ 1 (measured spread in docs/method.md). `weighting="sample"` is the other reading: one scalar draw per
sample and perturbed module, and each sample's perturbed Fisher weighted by its own w_n (the batch's term
then has w_b = 1). `weighting="abs_mean"` is the earlier
exp(−(α·mean|ε_μ| + α·mean|ε_σ|)), a near-constant ≈ exp(−2α·sqrt(2/π)) kept for the ablation.

A has units of squared gradient and R is dimensionless, so T puts each term on one scale:
- "none": the raw formula (the paper's);
- "mean": divided by its mean over the candidates (a term whose mean is 0 stays 0);
- "per_tensor": divided by its mean within each parameter tensor, so that tensors whose Fisher differs by
  orders of magnitude (a block's V against its Q and K) compete on their relative values;
- "rank": its rank fraction in [0, 1) (entries strictly smaller / n; ties share the lowest rank).
With no perturbation (A′ = A) every R_b = 0, so DR = T(A): the task term.
"""

from __future__ import annotations

import math

import torch

from fishertune.errors import FisherTuneError
from fishertune.sparse.options import DomainWeighting, Normalization, check_option
from fishertune.sparse.perturbation import Draws


def draw_weight(draws: Draws, weighting: DomainWeighting = "paper") -> float:
    """w = exp(−(ε_μ + ε_σ)) from the signed draws ("paper") or from their magnitudes ("abs_mean")."""
    check_option(weighting, DomainWeighting, "domain weighting")
    if weighting == "sample":
        raise FisherTuneError("the sample weighting weighs each sample's perturbed Fisher, not the batch "
                              "(FeaturePerturbation.sample_weights)")
    if weighting == "paper":
        return math.exp(-(draws.eps_mu + draws.eps_sigma))
    return math.exp(-(draws.abs_mu + draws.abs_sigma))


def flatten(values: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([values[n].float().reshape(-1) for n in names])


def unflatten(flat: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, offset = {}, 0
    for name, t in like.items():
        out[name] = flat[offset:offset + t.numel()].view(t.shape)
        offset += t.numel()
    return out


def relative_change(clean: torch.Tensor, moved: torch.Tensor, eps_ratio: float = 1e-3,
                    prior_floor: float = 0.0) -> torch.Tensor:
    """R = |A − A′| / (min(A, A′) + δ + ε), ε = eps_ratio · mean(A), on flat tensors."""
    return _ratio(clean, moved, _eps(clean, eps_ratio), prior_floor)  # two buffers of the inputs' size


def _eps(clean: torch.Tensor, eps_ratio: float) -> torch.Tensor:
    if eps_ratio <= 0:
        raise FisherTuneError(f"eps_ratio must be > 0, got {eps_ratio}")
    return (eps_ratio * clean.mean()).clamp_min(torch.finfo(torch.float32).tiny)


def _ratio(clean: torch.Tensor, moved: torch.Tensor, eps: torch.Tensor, prior_floor: float) -> torch.Tensor:
    denominator = torch.minimum(clean, moved).add_(prior_floor).add_(eps)
    return torch.sub(clean, moved).abs_().div_(denominator)


def normalize_term(values: torch.Tensor, normalize: Normalization, sizes: list[int] | None = None,
                   in_place: bool = False) -> torch.Tensor:
    """T of the module docstring, on a flat tensor; `sizes` are the tensors' lengths in it (per_tensor);
    `in_place`: mean and per_tensor overwrite `values` instead of making a copy."""
    check_option(normalize, Normalization, "DR-FIM normalize")
    if normalize == "none":
        return values
    if normalize in ("mean", "per_tensor"):
        lengths = sizes if normalize == "per_tensor" else [values.numel()]
        if lengths is None or sum(lengths) != values.numel():
            raise FisherTuneError("per_tensor normalisation needs the lengths of the tensors")
        out = values if in_place else torch.empty_like(values)
        for part, into in zip(values.split(lengths), out.split(lengths)):
            mean = part.mean()
            if mean > 0:
                torch.div(part, mean, out=into)
            else:
                into.zero_()
        return out
    ordered = torch.sort(values).values
    return torch.searchsorted(ordered, values, side="left").float() / values.numel()


class DomainTerm:
    """D = (1/B) Σ_b w_b · T(R_b), accumulated one batch at a time on flat tensors. Under "none" and
    "per_tensor" each batch's R_b is made one tensor at a time (`sizes`), so the running sum is the only
    buffer of the candidates' size; "mean" and "rank" need the whole R_b at once."""

    def __init__(self, normalize: Normalization = "mean", eps_ratio: float = 1e-3,
                 sizes: list[int] | None = None):
        check_option(normalize, Normalization, "DR-FIM normalize")
        self.normalize, self.eps_ratio, self.sizes = normalize, eps_ratio, sizes
        self.total: torch.Tensor | None = None
        self.batches = 0
        self.weights: list[float] = []

    def add(self, clean: torch.Tensor, moved: torch.Tensor, weight: float, prior_floor: float = 0.0,
            scale: float = 1.0) -> None:
        if self.normalize in ("none", "per_tensor") and self.sizes is not None:
            if self.total is None:
                self.total = torch.zeros_like(clean)
            eps = _eps(clean, self.eps_ratio)
            for c, m, into in zip(*(t.split(self.sizes) for t in (clean, moved, self.total))):
                ratio = _ratio(c, m, eps, prior_floor)
                into.add_(normalize_term(ratio if scale == 1.0 else ratio.mul_(scale), self.normalize,
                                         [ratio.numel()], in_place=True).mul_(weight))
        else:
            ratio = relative_change(clean, moved, self.eps_ratio, prior_floor)
            term = normalize_term(ratio if scale == 1.0 else ratio.mul_(scale), self.normalize, self.sizes,
                                  in_place=True).mul_(weight)
            self.total = term if self.total is None else self.total.add_(term)
        self.batches += 1
        self.weights.append(weight)

    def value(self) -> torch.Tensor:
        if self.total is None:
            raise FisherTuneError("the domain term needs at least one perturbed batch")
        return self.total / self.batches

    def take_value(self) -> torch.Tensor:
        """`value()` made in the running sum's own buffer (no copy); the term accepts no more batches."""
        if self.total is None:
            raise FisherTuneError("the domain term needs at least one perturbed batch")
        value, self.total = self.total.div_(self.batches), None
        return value


def add_normalized(into: torch.Tensor, values: torch.Tensor, normalize: Normalization,
                   sizes: list[int]) -> torch.Tensor:
    """into += T(values), one tensor at a time under "none" and "per_tensor" (no copy of `values`)."""
    if normalize not in ("none", "per_tensor"):
        return into.add_(normalize_term(values, normalize, sizes))
    for part, target in zip(values.split(sizes), into.split(sizes)):
        target.add_(normalize_term(part, normalize, [part.numel()]))
    return into


def dr_fim(fisher: dict[str, torch.Tensor], fisher_perturbed: dict[str, torch.Tensor],
           eps_mu: float, eps_sigma: float, normalize: Normalization = "mean", eps_ratio: float = 1e-3,
           prior_floor: float = 0.0, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """DR-FIM of one batch (B = 1): T(F) + exp(−(ε_μ + ε_σ))·T(s·R), float32, one tensor per name of
    `fisher` (the candidates). ε_μ, ε_σ are the signed draws."""
    _check_same(fisher, fisher_perturbed)
    names = list(fisher)
    clean = flatten(fisher, names)
    moved = flatten(fisher_perturbed, names).to(clean.device)
    sizes = [fisher[n].numel() for n in names]
    domain = DomainTerm(normalize, eps_ratio, sizes)
    domain.add(clean, moved, draw_weight(Draws(eps_mu, eps_sigma)), prior_floor, scale)
    return unflatten(normalize_term(clean, normalize, sizes) + domain.value(), fisher)


def _check_same(fisher: dict, fisher_perturbed: dict) -> None:
    if set(fisher) != set(fisher_perturbed):
        missing = sorted(set(fisher) ^ set(fisher_perturbed))
        raise FisherTuneError(f"clean and perturbed Fisher cover different parameters, e.g. {missing[0]!r}")
    if not fisher:
        raise FisherTuneError("DR-FIM needs at least one candidate parameter")
