"""The selection code before threshold selection (sort of all scores, per-tensor scatter loop), kept verbatim
as the reference that `fishertune.sparse.selection` must match bit for bit."""

from __future__ import annotations

import math

import torch

from fishertune.errors import FisherTuneError
from fishertune.sparse.selection import candidate_names


def reference_select_topk(scores, ratio=None, count=None, granularity="element", scope="global",
                          include=None, exclude=None, max_per_tensor=None, keep=None):
    names = candidate_names(list(scores), include, exclude)
    total = sum(scores[n].numel() for n in names)
    caps = {n: scores[n].numel() if max_per_tensor is None else math.floor(max_per_tensor * scores[n].numel())
            for n in names}
    masks = {n: torch.zeros(s.shape, dtype=torch.bool, device=s.device) for n, s in scores.items()}
    for n, kept in (keep or {}).items():
        if n in names:
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
