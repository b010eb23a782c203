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

from fishertune.errors import InputError, UsageError
from fishertune.sparse.finite import require_finite
from fishertune.sparse.options import Granularity, Scope, check_option


def candidate_names(names: Sequence[str], include: Sequence[str] | str | None = None,
                    exclude: Sequence[str] | str | None = None) -> list[str]:
    """Names matching any include glob (all when None) and no exclude glob; an include that matches nothing
    is an error (it is almost always a typo)."""
    include = [include] if isinstance(include, str) else include
    exclude = [exclude] if isinstance(exclude, str) else (exclude or [])
    if include is not None:
        for pattern in include:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise InputError(f"include pattern {pattern!r} matches no parameter")
    return [n for n in names
            if (include is None or any(fnmatch.fnmatchcase(n, p) for p in include))
            and not any(fnmatch.fnmatchcase(n, p) for p in exclude)]


def select_topk(scores: dict[str, torch.Tensor], ratio: float | None = None, count: int | None = None,
                granularity: Granularity = "element", scope: Scope = "global",
                include: Sequence[str] | str | None = None, exclude: Sequence[str] | str | None = None,
                max_per_tensor: float | None = None,
                keep: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Boolean masks (same shapes as `scores`) selecting the top-scoring candidate entries.

    keep: entries already selected (mask growth). They stay selected and count against the budget and the
    caps; the rest of the budget goes to the best other entries (units ranked by their mean score over all
    their entries, filled with their best free entries). A budget below the kept count is an error.
    """
    check_option(granularity, Granularity, "granularity")
    check_option(scope, Scope, "scope")
    names = candidate_names(list(scores), include, exclude)
    if not names:
        raise InputError("no candidate parameters left after include/exclude")
    total = sum(scores[n].numel() for n in names)
    if (ratio is None) == (count is None):
        raise UsageError("give exactly one of ratio or count")
    if ratio is not None and not 0.0 <= ratio <= 1.0:
        raise UsageError(f"ratio must be in [0, 1], got {ratio}")
    if count is not None and (int(count) != count or not 0 <= count <= total):
        raise UsageError(f"count must be an integer in [0, {total}] (candidate entries), got {count}")
    if max_per_tensor is not None and not 0.0 < max_per_tensor <= 1.0:
        raise UsageError(f"max_per_tensor must be in (0, 1], got {max_per_tensor}")
    require_finite({n: scores[n] for n in names}, "scores")
    caps = {n: scores[n].numel() if max_per_tensor is None else math.floor(max_per_tensor * scores[n].numel())
            for n in names}
    masks = {n: torch.zeros(s.shape, dtype=torch.bool, device=s.device) for n, s in scores.items()}
    for n, kept in (keep or {}).items():
        if n not in names:
            if bool(kept.any()):
                raise UsageError(f"kept entries of {n!r}, which is not a candidate")
            continue
        if kept.shape != scores[n].shape:
            raise UsageError(f"keep mask of {n!r} has shape {list(kept.shape)}, "
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
        raise UsageError(f"budget of {k} entries is below the {k - remaining} already selected "
                         f"in {where}")
    if any(v < 0 for v in left.values()):
        raise UsageError(f"already selected entries exceed max_per_tensor in {where}")
    if remaining > sum(left.values()):
        raise InputError(f"budget of {k} entries exceeds max_per_tensor capacity of {where}")
    if remaining == 0:
        return
    if granularity == "element":
        _select_elements(scores, names, remaining, left, masks)
    else:
        _select_units(scores, names, remaining, granularity, left, masks)


def _descending(values: torch.Tensor) -> torch.Tensor:
    """Indices sorting `values` from high to low; equal values keep their index order."""
    return torch.sort(values, descending=True, stable=True).indices


def _best(values: list[torch.Tensor], eligible: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Masks of the k best eligible entries of the flat float tensors `values`, ranked by (value high to
    low, list position, index): the order of a stable descending sort of their concatenation.

    By threshold instead of a sort: t = the k-th largest eligible value (_kth_largest); every entry above t
    is taken, then the first k − #(above t) entries equal to t in (list position, index) order.
    """
    if k == 0:
        return [torch.zeros_like(e) for e in eligible]
    if k >= sum(int(e.sum()) for e in eligible):
        return [e.clone() for e in eligible]
    threshold = _kth_largest(values, eligible, k)
    above = [(v > threshold) & e for v, e in zip(values, eligible)]
    ties_needed = k - sum(int(a.sum()) for a in above)
    for a, v, e in zip(above, values, eligible):
        if ties_needed == 0:
            break
        if v.numel() == 0:
            continue
        tied = (v == threshold) & e
        order = tied.cumsum(0)  # 1, 2, ... at the tied entries, in index order
        take = tied & (order <= ties_needed)
        a |= take
        ties_needed -= min(ties_needed, int(order[-1]))
    return above


def _kth_largest(values: list[torch.Tensor], eligible: list[torch.Tensor], k: int) -> torch.Tensor:
    """The k-th largest eligible entry of the float32 tensors `values` (1 ≤ k ≤ #eligible), as a 0-d tensor.

    A radix selection on the bits: a float32's bits, read as an int32 b, order the values x ≥ +0 as b does
    and the values x < 0 in reverse (so the key b for b ≥ 0, b ^ 0x7fffffff for b < 0 orders all of them).
    A histogram of the upper 16 bits over all tensors finds the bucket holding the k-th largest key, a
    histogram of the lower 16 bits within that bucket the key itself. Two elementwise passes, one tensor at
    a time: no concatenation, sort or copy of all values (memory ∝ the largest tensor; a k-th value of the
    concatenation held two copies of every score). Ineligible entries count as −inf, below every eligible
    (finite) one; −0 is made +0, so that equal values have equal keys.
    """
    device = values[0].device

    def bits(v: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return v.masked_fill(~e, -math.inf).add_(0.0).view(torch.int32)

    def ordered(upper: torch.Tensor) -> torch.Tensor:
        """A histogram over the raw upper 16 bits (index u + 32768) reordered to key order."""
        return torch.cat([upper[:32768].flip(0), upper[32768:]])

    def count_from_top(histogram: torch.Tensor, k: int) -> tuple[int, int]:
        """(the bucket holding the k-th largest, k within that bucket) of a 65536-bucket histogram."""
        from_top = histogram.flip(0).cumsum(0)
        position = int(torch.searchsorted(from_top, k))
        return 65535 - position, k - (int(from_top[position - 1]) if position else 0)

    upper = torch.zeros(65536, dtype=torch.int64, device=device)
    for v, e in zip(values, eligible):
        upper += torch.bincount((bits(v, e) >> 16) + 32768, minlength=65536)
    bucket, k = count_from_top(ordered(upper), k)  # raw upper bits: bucket − 32768, reversed if negative
    negative = bucket < 32768
    raw_upper = -1 - bucket if negative else bucket - 32768
    lower = torch.zeros(65536, dtype=torch.int64, device=device)
    for v, e in zip(values, eligible):
        b = bits(v, e)
        lower += torch.bincount(b[(b >> 16) == raw_upper] & 0xFFFF, minlength=65536)
    low, _ = count_from_top(lower.flip(0) if negative else lower, k)
    raw_low = 65535 - low if negative else low
    return torch.tensor(raw_upper * 65536 + raw_low, dtype=torch.int32, device=device).view(torch.float32)


def _select_elements(scores, names, k, left, masks) -> None:
    values = [scores[n].detach().reshape(-1).float() for n in names]
    eligible = [~masks[n].reshape(-1) for n in names]
    for i, n in enumerate(names):  # a capped tensor offers only its best `left` free entries
        if left[n] < int(eligible[i].sum()):
            eligible[i] = _best([values[i]], [eligible[i]], left[n])[0]
    for n, chosen in zip(names, _best(values, eligible, k)):
        masks[n] |= chosen.view(masks[n].shape)


def _units(t: torch.Tensor, granularity: str) -> torch.Tensor:
    """A tensor's entries as [units, unit size]."""
    if granularity == "tensor" or t.dim() == 0:
        return t.reshape(1, -1)
    return t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(-1, 1)


def _select_units(scores, names, k, granularity, left, masks) -> None:
    """Greedy over units, best mean first; unit u of tensor n takes min(free_u, budget left, cap left of n).

    Vectorised: until the budget runs out a unit takes a_u = min(free_u, cap left of n), i.e. the
    increments of min(Σ free over n's units so far, cap of n); the unit where Σ a crosses k takes the rest,
    units after it nothing. Units taking all their free entries are set at once; the (at most one per
    capped tensor, plus one at the budget end) partial units take their best free entries.
    """
    grids = [_units(scores[n].detach().float(), granularity) for n in names]
    free = [~_units(masks[n], granularity) for n in names]
    unit_scores = torch.cat([g.mean(1) for g in grids])
    owner = torch.cat([torch.full((g.shape[0],), i, dtype=torch.long) for i, g in enumerate(grids)])
    row = torch.cat([torch.arange(g.shape[0]) for g in grids])
    free_count = torch.cat([f.sum(1) for f in free]).cpu()
    order = _descending(unit_scores).cpu()
    owner, row, free_count = owner[order], row[order], free_count[order]
    take = torch.zeros_like(free_count)
    for i, n in enumerate(names):  # each tensor's units in rank order, capped at what it has left
        mine = (owner == i).nonzero().squeeze(1)
        reach = free_count[mine].cumsum(0).clamp(max=left[n])
        take[mine] = torch.diff(reach, prepend=reach.new_zeros(1))
    reach = take.cumsum(0)
    last = int(torch.searchsorted(reach, k))  # the unit where the budget is reached
    take[last] -= int(reach[last]) - k
    take[last + 1:] = 0
    whole = take == free_count
    for i, n in enumerate(names):
        rows = row[whole & (owner == i) & (take > 0)]
        full = torch.zeros(grids[i].shape[0], dtype=torch.bool, device=free[i].device)
        full[rows.to(full.device)] = True
        unit_mask = _units(masks[n], granularity)  # a view: masks are contiguous
        unit_mask |= full[:, None] & free[i]
    for position in ((~whole) & (take > 0)).nonzero().squeeze(1).tolist():
        i, u, n = int(owner[position]), int(row[position]), names[int(owner[position])]
        unit_mask = _units(masks[n], granularity)
        unit_mask[u] |= _best([grids[i][u]], [free[i][u]], int(take[position]))[0]
