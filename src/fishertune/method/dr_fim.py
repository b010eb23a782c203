"""Domain-Related Fisher: task importance plus how much that importance moves under a domain perturbation.

    R_i  = |F_i − F′_i| / (min(F_i, F′_i) + ε),   ε = eps_ratio · mean(F)     (relative Fisher change;
                                                                  ε ≥ the smallest float32 when F = 0)
    w    = exp(−(|ε_μ| + |ε_σ|))                                               (perturbation draw weight)
    DR_i = T(F)_i + w · T(R)_i

F is the clean Fisher, F′ the Fisher under the feature perturbation, means are over all candidate
entries (the keys given). ε is relative to F's scale so the ratio does not explode where F ≈ 0.

F has units of squared gradient and R is dimensionless, so `normalize` puts them on one scale (T):
- "mean" (default): each term divided by its mean over the candidates (both average 1 before w);
  a term whose mean is 0 (no perturbation) stays 0.
- "rank": each term replaced by its rank fraction in [0, 1) (number of entries strictly smaller / n;
  ties share the lowest rank).
- "none": the raw formula DR = F + w·R (the ablation that lets R dominate).

With no perturbation (F′ = F) R = 0, so DR = F exactly under "none", and DR is a strictly increasing
function of F (same ranking, same ties) under "mean" and "rank".
"""

from __future__ import annotations

import math

import torch

from fishertune.errors import FisherTuneError

NORMALIZATIONS = ("mean", "rank", "none")


def dr_fim(fisher: dict[str, torch.Tensor], fisher_perturbed: dict[str, torch.Tensor],
           eps_mu: float, eps_sigma: float, normalize: str = "mean",
           eps_ratio: float = 1e-3) -> dict[str, torch.Tensor]:
    """DR-FIM scores, float32, one tensor per name of `fisher` (the candidates)."""
    if normalize not in NORMALIZATIONS:
        raise FisherTuneError(f"unknown DR-FIM normalize {normalize!r}; "
                              f"choose one of {', '.join(NORMALIZATIONS)}")
    if eps_ratio <= 0:
        raise FisherTuneError(f"eps_ratio must be > 0, got {eps_ratio}")
    if set(fisher) != set(fisher_perturbed):
        missing = sorted(set(fisher) ^ set(fisher_perturbed))
        raise FisherTuneError(f"clean and perturbed Fisher cover different parameters, e.g. {missing[0]!r}")
    names = list(fisher)
    if not names:
        raise FisherTuneError("DR-FIM needs at least one candidate parameter")
    clean = torch.cat([fisher[n].float().reshape(-1) for n in names])
    moved = torch.cat([fisher_perturbed[n].float().reshape(-1).to(clean.device) for n in names])
    eps = (eps_ratio * clean.mean()).clamp_min(torch.finfo(torch.float32).tiny)
    ratio = (clean - moved).abs() / (torch.minimum(clean, moved) + eps)
    weight = math.exp(-(abs(eps_mu) + abs(eps_sigma)))
    score = _scale(clean, normalize) + weight * _scale(ratio, normalize)
    out, offset = {}, 0
    for n in names:
        out[n] = score[offset:offset + fisher[n].numel()].view(fisher[n].shape)
        offset += fisher[n].numel()
    return out


def _scale(values: torch.Tensor, normalize: str) -> torch.Tensor:
    if normalize == "none":
        return values
    if normalize == "mean":
        mean = values.mean()
        return values / mean if mean > 0 else torch.zeros_like(values)
    ordered = torch.sort(values).values
    return torch.searchsorted(ordered, values, side="left").float() / values.numel()
