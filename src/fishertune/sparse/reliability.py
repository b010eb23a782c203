"""Is the domain term signal or noise? Split-half reliability of DR-FIM's two terms.

The estimation images are split into two disjoint halves (the first and the second half of every batch,
so both halves see the same number of batches), the task term T(A) and the domain term D are estimated on
each half with the same settings but independent random draws (perturbation and weight samples: with
shared draws, the same channel would be pushed the same way in both halves and the halves would agree
for that reason alone), and each term's Spearman rank correlation between the halves, over all
candidate entries, is its reliability: near 1, the ranking the selection uses is a property of the model
and the data; near 0, it is noise of the few images it came from (docs/method.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.sparse.batching import batch_size, map_tensors
from fishertune.sparse.fisher import LossFn
from fishertune.sparse.mask_selector import SPLIT_HALVES, MaskSelector, seed_stream


def halves(batch: Any) -> tuple[Any, Any]:
    """The first ⌊B/2⌋ samples of a batch and the rest."""
    size = batch_size(batch)
    if size < 2:
        raise FisherTuneError("split-half reliability needs batches of at least 2 samples")
    cut = size // 2

    def part(piece: slice):
        return map_tensors(batch, lambda t: t[piece] if t.dim() > 0 and t.shape[0] == size else t)

    return part(slice(0, cut)), part(slice(cut, size))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n−1 of a flat tensor, tied entries sharing their average rank (float64)."""
    ordered, order = torch.sort(values)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = torch.empty(values.numel(), dtype=torch.float64, device=values.device)
    ranks[order] = ((2 * ends - counts.double() - 1) / 2)[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ: the Pearson correlation of the average ranks; NaN when either side is constant."""
    if bool((a == a[0]).all()) or bool((b == b[0]).all()):
        return float("nan")
    ranks = [average_ranks(x.detach().reshape(-1)) for x in (a, b)]
    centred = [r - r.mean() for r in ranks]
    return float((centred[0] * centred[1]).sum() / (centred[0].norm() * centred[1].norm()))


def split_half_reliability(model: nn.Module, config, batches: Sequence[Any],
                           loss_fn: LossFn) -> dict[str, float]:
    """{"task": ρ, "domain": ρ, "images_per_half": n} for FisherTune's `config` (a MaskSelectorConfig whose
    selection uses the domain term) on `batches`; the model's weights are left as they were."""
    parts = [halves(b) for b in batches]
    terms = []
    for side in range(2):
        selector = MaskSelector(model, replace(config, score="dr_fim",
                                               seed=seed_stream(config.seed, SPLIT_HALVES, side)),
                                keep_terms=True)
        selector.estimate([p[side] for p in parts], loss_fn)
        terms.append(selector.terms)
    images = sum(batch_size(p[0]) for p in parts)
    dr = [t["task"] + t["domain"] for t in terms]
    return {"task": spearman(terms[0]["task"], terms[1]["task"]),
            "domain": spearman(terms[0]["domain"], terms[1]["domain"]),
            "dr_fim": spearman(dr[0], dr[1]), "images_per_half": images}


def top_set(values: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` largest entries (ties broken by the lower index, as select_topk does)."""
    order = torch.sort(values, descending=True, stable=True).indices
    return order[:count]


def term_influence(task: torch.Tensor, domain: torch.Tensor, count: int) -> dict[str, dict[str, float]]:
    """Which term decides DR = task + domain's top `count` (docs/method.md §6): per term, the share of
    DR's top-k that the term alone would also select (|top(DR) ∩ top(term)| / k; for independent
    rankings about k/n) and Spearman(DR, term). A term whose share is near 1 decides the selection; the
    other one then does nothing."""
    dr = task + domain
    chosen = torch.zeros(dr.numel(), dtype=torch.bool)
    chosen[top_set(dr, count)] = True
    out = {}
    for name, term in (("task", task), ("domain", domain)):
        share = float(chosen[top_set(term, count)].sum()) / count if count else float("nan")
        out[name] = {"share": share, "spearman": spearman(dr, term)}
    return out
