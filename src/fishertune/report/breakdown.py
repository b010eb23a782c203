"""Per-parameter tensors (scores, masks) summed up per (block, module type) cell, the plots' numbers.

A cell's key is `(block index or None, module type)` from `naming.parse_param_name`. The numbers are
pooled over entries, not over tensors: a cell's mean score is (sum of all its entries) / (its entry
count), so a large FFN matrix weighs more than its bias, as it does in a top-k selection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fishertune.errors import FisherTuneError
from fishertune.report.naming import MODULE_TYPES, parse_param_name

Cell = tuple[int | None, str]
REDUCTIONS = ("mean", "sum", "max")


def to_numpy(x: Any) -> np.ndarray:
    """A torch Tensor (any device, any dtype) or array-like as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.dtype.is_floating_point:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def aggregate_scores(scores: Mapping[str, Any], reduce: str = "mean") -> dict[Cell, float]:
    """Per cell: the mean (pooled over entries), sum or max of the scores of its parameters."""
    if reduce not in REDUCTIONS:
        raise FisherTuneError(f"unknown reduce {reduce!r}; choose one of {', '.join(REDUCTIONS)}")
    sums: dict[Cell, float] = {}
    counts: dict[Cell, int] = {}
    maxima: dict[Cell, float] = {}
    for name, tensor in scores.items():
        values = to_numpy(tensor).astype(np.float64).ravel()
        if values.size == 0:
            continue
        cell = parse_param_name(name)
        sums[cell] = sums.get(cell, 0.0) + float(values.sum())
        counts[cell] = counts.get(cell, 0) + values.size
        maxima[cell] = max(maxima.get(cell, -np.inf), float(values.max()))
    if reduce == "sum":
        return sums
    if reduce == "max":
        return maxima
    return {cell: sums[cell] / counts[cell] for cell in sums}


@dataclass(frozen=True)
class SelectionCounts:
    """(selected entries, all entries) per cell, per block (None = outside the blocks) and per type."""

    by_cell: dict[Cell, tuple[int, int]]
    by_block: dict[int | None, tuple[int, int]]
    by_type: dict[str, tuple[int, int]]
    selected: int
    total: int

    @property
    def global_ratio(self) -> float:
        """Selected / all candidate entries: the expected fraction in every group for a uniformly
        random selection of the same size (hypergeometric mean)."""
        return self.selected / self.total if self.total else 0.0


def _add(table: dict, key, selected: int, total: int) -> None:
    s, t = table.get(key, (0, 0))
    table[key] = (s + selected, t + total)


def count_selection(masks: Mapping[str, Any]) -> SelectionCounts:
    """Counts the True entries of boolean masks per cell, block and module type."""
    by_cell: dict[Cell, tuple[int, int]] = {}
    by_block: dict[int | None, tuple[int, int]] = {}
    by_type: dict[str, tuple[int, int]] = {}
    for name, mask in masks.items():
        values = to_numpy(mask).astype(bool)
        block, kind = parse_param_name(name)
        selected, total = int(values.sum()), int(values.size)
        _add(by_cell, (block, kind), selected, total)
        _add(by_block, block, selected, total)
        _add(by_type, kind, selected, total)
    selected = sum(s for s, _ in by_type.values())
    total = sum(t for _, t in by_type.values())
    return SelectionCounts(by_cell, by_block, by_type, selected, total)


def grid_axes(cells) -> tuple[list[int | None], list[str]]:
    """Rows (None = outside the blocks first, then blocks ascending) and the module types present, in
    MODULE_TYPES order."""
    blocks = {block for block, _ in cells}
    rows = ([None] if None in blocks else []) + sorted(b for b in blocks if b is not None)
    kinds = {kind for _, kind in cells}
    return rows, [k for k in MODULE_TYPES if k in kinds]


def score_grid(scores: Mapping[str, Any],
               reduce: str = "mean") -> tuple[list[int | None], list[str], np.ndarray]:
    """The heatmap's rows (blocks), columns (module types) and values (NaN where a block has no such
    module), from `aggregate_scores`."""
    cells = aggregate_scores(scores, reduce=reduce)
    rows, cols = grid_axes(cells)
    grid = np.full((len(rows), len(cols)), np.nan)
    for (block, kind), value in cells.items():
        grid[rows.index(block), cols.index(kind)] = value
    return rows, cols, grid


def selection_rows(masks: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (block, module type) cell, in heatmap order: block (None outside the blocks), module,
    selected, total, fraction (of the cell's entries) and share (of the whole selection); for CSV/markdown."""
    counts = count_selection(masks)
    rows, kinds = grid_axes(counts.by_cell)
    out = []
    for block in rows:
        for kind in kinds:
            if (block, kind) in counts.by_cell:
                selected, total = counts.by_cell[block, kind]
                out.append({"block": block, "module": kind, "selected": selected, "total": total,
                            "fraction": selected / total if total else 0.0,
                            "share": selected / counts.selected if counts.selected else 0.0})
    return out


def selection_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of two selections ({name: bool mask}, compared flattened; a
    name missing from one selection selects nothing there). Two independent random selections of a
    fraction p of the same entries overlap by p / (2 − p) on average: 2.6% at p = 5%."""
    both = union = 0
    for name in set(a) | set(b):
        x, y = (to_numpy(m[name]).astype(bool).reshape(-1) if name in m else None for m in (a, b))
        x = np.zeros_like(y) if x is None else x
        y = np.zeros_like(x) if y is None else y
        if x.size != y.size:
            raise FisherTuneError(f"selection masks of {name} differ in size: {x.size} vs {y.size}")
        both += int((x & y).sum())
        union += int((x | y).sum())
    return both / union if union else 1.0


def module_shares(masks: Mapping[str, Any]) -> dict[str, float]:
    """Share of the whole selection per module type (Q, K, V, proj, FFN, norm, ...), over all blocks."""
    counts = count_selection(masks)
    return {m: counts.by_type[m][0] / counts.selected for m in MODULE_TYPES
            if m in counts.by_type and counts.selected}


def block_shares(masks: Mapping[str, Any]) -> dict[str, float]:
    """Share of the whole selection per transformer block ("outside" for parameters outside the blocks)."""
    counts = count_selection(masks)
    rows, _ = grid_axes(counts.by_cell)
    return {("outside" if b is None else str(b)): counts.by_block[b][0] / counts.selected for b in rows
            if counts.selected}
