"""Top-k selection of parameter entries by score, with exact counts and deterministic ties.

Candidates are the names of `scores` that match an `include` pattern (all names when include is None) and
no `exclude` pattern. Patterns are shell-style globs (fnmatch, case-sensitive; `*` also matches dots) on
the full parameter name, e.g. "*.embeddings.*" or "backbone.model.encoder.layer.1[0-1].*". The result has
a mask for every name of `scores`; non-candidates are all False.

Budget, always counted in elements:
- scope "global": k = count, or ⌊ratio·N + ½⌋ with N the candidate elements; exactly k are selected.
- scope "per_tensor": every candidate tensor t gets exactly k_t = ⌊r·n_t + ½⌋ of its n_t elements, with
  r = ratio, or r = count/N when a count is given (so the total is Σ k_t, within #tensors/2 of count).
- max_per_tensor = c caps every tensor at ⌊c·n_t⌋ selected elements (an error if the budget cannot fit).

Granularity, the unit that is ranked:
- "element": single entries, ranked by score.
- "row": a row along dim 0 (an output channel; an entry of a 1-D tensor), ranked by its mean score.
- "tensor": a whole tensor, ranked by its mean score.
Units are taken greedily, best first; a unit that does not fit the remaining budget (or its tensor's cap)
is filled with its best entries up to what fits, so the element count is exact — at most one partial unit
per budget end and per capped tensor.

Ties (equal scores) go to the unit that comes first: tensors in the order of `scores`, then flat index.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence

import torch

from fishertune.errors import FisherTuneError
from fishertune.method.finite import require_finite

GRANULARITIES = ("element", "row", "tensor")
SCOPES = ("global", "per_tensor")


def candidate_names(names: Sequence[str], include: Sequence[str] | str | None = None,
                    exclude: Sequence[str] | str | None = None) -> list[str]:
    """Names matching any include glob (all when None) and no exclude glob; an include that matches nothing
    is an error (it is almost always a typo)."""
    include = [include] if isinstance(include, str) else include
    exclude = [exclude] if isinstance(exclude, str) else (exclude or [])
    if include is not None:
        for pattern in include:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise FisherTuneError(f"include pattern {pattern!r} matches no parameter")
    return [n for n in names
            if (include is None or any(fnmatch.fnmatchcase(n, p) for p in include))
            and not any(fnmatch.fnmatchcase(n, p) for p in exclude)]


def select_topk(scores: dict[str, torch.Tensor], ratio: float | None = None, count: int | None = None,
                granularity: str = "element", scope: str = "global",
                include: Sequence[str] | str | None = None, exclude: Sequence[str] | str | None = None,
                max_per_tensor: float | None = None,
                keep: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Boolean masks (same shapes as `scores`) selecting the top-scoring candidate entries.

    keep: entries already selected (mask growth). They stay selected and count against the budget and the
    caps; the rest of the budget goes to the best other entries (units ranked by their mean score over all
    their entries, filled with their best free entries). A budget below the kept count is an error.
    """
    if granularity not in GRANULARITIES:
        raise FisherTuneError(f"unknown granularity {granularity!r}; "
                              f"choose one of {', '.join(GRANULARITIES)}")
    if scope not in SCOPES:
        raise FisherTuneError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    names = candidate_names(list(scores), include, exclude)
    if not names:
        raise FisherTuneError("no candidate parameters left after include/exclude")
    total = sum(scores[n].numel() for n in names)
    if (ratio is None) == (count is None):
        raise FisherTuneError("give exactly one of ratio or count")
    if ratio is not None and not 0.0 <= ratio <= 1.0:
        raise FisherTuneError(f"ratio must be in [0, 1], got {ratio}")
    if count is not None and (int(count) != count or not 0 <= count <= total):
        raise FisherTuneError(f"count must be an integer in [0, {total}] (candidate entries), got {count}")
    if max_per_tensor is not None and not 0.0 < max_per_tensor <= 1.0:
        raise FisherTuneError(f"max_per_tensor must be in (0, 1], got {max_per_tensor}")
    require_finite({n: scores[n] for n in names}, "scores")
    caps = {n: scores[n].numel() if max_per_tensor is None else math.floor(max_per_tensor * scores[n].numel())
            for n in names}
    masks = {n: torch.zeros(s.shape, dtype=torch.bool, device=s.device) for n, s in scores.items()}
    for n, kept in (keep or {}).items():
        if n not in names:
            if bool(kept.any()):
                raise FisherTuneError(f"kept entries of {n!r}, which is not a candidate")
            continue
        if kept.shape != scores[n].shape:
            raise FisherTuneError(f"keep mask of {n!r} has shape {list(kept.shape)}, "
                                  f"scores {list(scores[n].shape)}")
        masks[n] |= kept.to(masks[n].device)
    if scope == "global":
        k = int(count) if count is not None else math.floor(ratio * total + 0.5)
        _select(scores, names, k, granularity, caps, masks)
    else:
        r = ratio if ratio is not None else count / total
        for n in names:
            _select(scores, [n], math.floor(r * scores[n].numel() + 0.5), granularity, caps, masks)
    return masks


def _select(scores, names, k, granularity, caps, masks) -> None:
    """Add k − (already selected) entries of `names` to `masks`."""
    where = repr(names[0]) if len(names) == 1 else "the candidates"
    left = {n: caps[n] - int(masks[n].sum()) for n in names}
    remaining = k - sum(int(masks[n].sum()) for n in names)
    if remaining < 0:
        raise FisherTuneError(f"budget of {k} entries is below the {k - remaining} already selected "
                              f"in {where}")
    if any(v < 0 for v in left.values()):
        raise FisherTuneError(f"already selected entries exceed max_per_tensor in {where}")
    if remaining > sum(left.values()):
        raise FisherTuneError(f"budget of {k} entries exceeds max_per_tensor capacity of {where}")
    if remaining == 0:
        return
    if granularity == "element":
        _select_elements(scores, names, remaining, left, masks)
    else:
        _select_units(scores, names, remaining, granularity, left, masks)


def _descending(values: torch.Tensor) -> torch.Tensor:
    """Indices sorting `values` from high to low; equal values keep their index order."""
    return torch.sort(values, descending=True, stable=True).indices


def _select_elements(scores, names, k, left, masks) -> None:
    pools, owners = [], []
    for i, n in enumerate(names):
        flat = scores[n].detach().reshape(-1).float()
        index = (~masks[n].reshape(-1)).nonzero().squeeze(1)
        if left[n] < index.numel():
            index = torch.sort(index[_descending(flat[index])[:left[n]]]).values
        pools.append((flat[index], index))
        owners.append(torch.full((index.numel(),), i, dtype=torch.long, device=flat.device))
    values = torch.cat([v for v, _ in pools])
    indices = torch.cat([ix for _, ix in pools])
    owner = torch.cat(owners)
    chosen = _descending(values)[:k]
    for i, n in enumerate(names):
        masks[n].view(-1)[indices[chosen[owner[chosen] == i]]] = True


def _units(t: torch.Tensor, granularity: str) -> torch.Tensor:
    """A tensor's entries as [units, unit size]."""
    if granularity == "tensor" or t.dim() == 0:
        return t.reshape(1, -1)
    return t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(-1, 1)


def _select_units(scores, names, k, granularity, left, masks) -> None:
    grids = [_units(scores[n].detach().float(), granularity) for n in names]
    taken = [_units(masks[n], granularity) for n in names]
    unit_scores = torch.cat([g.mean(1) for g in grids])
    unit_owner = [(i, u) for i, g in enumerate(grids) for u in range(g.shape[0])]
    remaining = k
    for position in _descending(unit_scores).tolist():
        i, u = unit_owner[position]
        n, row = names[i], grids[i][u]
        free = (~taken[i][u]).nonzero().squeeze(1)
        take = min(free.numel(), remaining, left[n])
        if take == 0:
            continue
        columns = free if take == free.numel() else free[_descending(row[free])[:take]]
        masks[n].view(-1)[u * row.numel() + columns] = True
        left[n] -= take
        remaining -= take
        if remaining == 0:
            break
