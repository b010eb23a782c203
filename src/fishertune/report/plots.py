"""The report's figures. Each function takes plain dicts/tensors/arrays, draws one PNG atomically and
returns its path. Figures are built with matplotlib's object API (no pyplot state; PNG via Agg), so
they can be drawn from any thread or a headless server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fishertune.atomic import write_atomic
from fishertune.data.labels import CLASS_NAMES, PALETTE, colorize
from fishertune.errors import FisherTuneError
from fishertune.label_space import IGNORE_INDEX
from fishertune.report.breakdown import count_selection, grid_axes, score_grid, to_numpy
from fishertune.report.palette import OKABE_ITO, method_colors
from fishertune.report.results import metric_keys, metric_label, num_seeds
from fishertune.report.stats import summarize

PathLike = str | os.PathLike



def save_figure(fig: Figure, path: PathLike, dpi: int = 120) -> Path:
    """The figure as a PNG, written atomically."""
    return write_atomic(path, lambda temp: fig.savefig(temp, format="png", dpi=dpi))

def _block_label(block: int | None) -> str:
    return "outside blocks" if block is None else f"block {block}"


def miou_bars(results: Mapping[str, Any], path: PathLike, title: str | None = None) -> Path:
    """Grouped bars: one group per domain (source, each target, mean target), one bar per method;
    error bars are the std over seeds when a method has more than one."""
    summaries = summarize(results)
    methods = list(summaries)
    keys = metric_keys(results)
    colors = method_colors(methods)
    n_seeds = num_seeds(results)
    width = 0.8 / len(methods)
    fig_width = max(6.0, 0.9 + len(keys) * (0.35 + 0.22 * len(methods)))
    fig = Figure(figsize=(fig_width, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(keys))
    annotate = len(keys) * len(methods) <= 48
    for i, name in enumerate(methods):
        stats = [summaries[name][k] for k in keys]
        means = [s.mean if s else np.nan for s in stats]
        stds = [s.std if s and s.n > 1 else 0.0 for s in stats]
        pos = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(pos, means, width, color=colors[name], label=name, edgecolor="white", linewidth=0.5,
                      yerr=stds if n_seeds > 1 else None, capsize=2, error_kw={"elinewidth": 0.8})
        if annotate:
            ax.bar_label(bars, labels=["" if np.isnan(m) else f"{m:.1f}" for m in means], fontsize=6,
                         rotation=90, padding=2)
    for boundary in (0.5, len(keys) - 1.5):  # source | targets | mean target
        ax.axvline(boundary, color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, [metric_label(k) for k in keys], rotation=20, ha="right")
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, max(10.0, ax.get_ylim()[1] * 1.12))
    spread = f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "single seed"
    ax.set_title(title or f"mIoU per domain and method ({spread})")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="method")
    return save_figure(fig, path)


def fisher_heatmap(scores: Mapping[str, Any], path: PathLike, reduce: str = "mean",
                   title: str | None = None, score_name: str = "DR-FIM score") -> Path:
    """Heatmap of blocks × module types of the per-cell score (mean pooled over entries by default,
    or "sum"/"max"), on a log colour scale. Works for DR-FIM, plain Fisher or any non-negative score.
    Grey cells hold a score of 0; "–" marks a block without that module type."""
    rows, cols, grid = score_grid(scores, reduce=reduce)
    if grid.size == 0:
        raise FisherTuneError("no scores to plot: the scores dict is empty")
    positive = grid[np.isfinite(grid) & (grid > 0)]
    log = positive.size > 0 and positive.min() < positive.max()
    norm = LogNorm(positive.min(), positive.max()) if log else Normalize()
    shown = np.ma.masked_where(~np.isfinite(grid) | ((grid <= 0) if log else False), grid)
    fig = Figure(figsize=(1.4 + 0.85 * len(cols), 1.3 + 0.36 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="0.85")  # grey: a score of 0 on the log scale
    image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    if len(rows) * len(cols) <= 400:
        for r in range(len(rows)):
            for c in range(len(cols)):
                value = grid[r, c]
                text = "–" if np.isnan(value) else f"{value:.1e}"
                light = np.isfinite(value) and value > 0 and norm(value) < 0.55
                ax.text(c, r, text, ha="center", va="center", fontsize=6.5,
                        color="white" if light else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), [_block_label(b) for b in rows])
    ax.set_xlabel("module type")
    ax.set_ylabel("transformer block")
    ax.set_title(title or f"{score_name} per block and module type ({reduce} per entry)")
    scale = "log scale" if log else "linear scale"
    fig.colorbar(image, ax=ax, label=f"{reduce} {score_name} ({scale})")
    return save_figure(fig, path)


def selection_breakdown(masks: Mapping[str, Any], path: PathLike,
                        reference_masks: Mapping[str, Any] | None = None,
                        reference_label: str = "random selection", title: str | None = None) -> Path:
    """What a selection took: the % of each module type's and each block's entries that are selected,
    next to a random selection of the same size. Without `reference_masks` the random bars are the
    analytic expectation (the global ratio, equal for every group). Numbers over the module-type bars
    are each type's share of the selected budget."""
    counts = count_selection(masks)
    if counts.total == 0:
        raise FisherTuneError("no masks to plot: the masks dict is empty")
    reference = count_selection(reference_masks) if reference_masks is not None else None
    if reference is not None and reference.total != counts.total:
        raise FisherTuneError(
            f"reference masks cover {reference.total} entries but the selection's cover {counts.total}")
    rows, kinds = grid_axes(counts.by_cell)
    fig = Figure(figsize=(max(9.0, 3.5 + 0.35 * (len(kinds) + len(rows))), 4.2), layout="constrained")
    type_ax, block_ax = fig.subplots(1, 2, width_ratios=[max(len(kinds), 3), max(len(rows), 3)])
    label = reference_label if reference is not None else f"{reference_label} (expected)"
    for ax, table, ref_table, keys, names in (
            (type_ax, counts.by_type, reference.by_type if reference else None, kinds, kinds),
            (block_ax, counts.by_block, reference.by_block if reference else None, rows,
             ["outside" if b is None else str(b) for b in rows])):
        ours = [100 * table[k][0] / table[k][1] if table[k][1] else 0.0 for k in keys]
        if ref_table is not None:
            theirs = [100 * ref_table[k][0] / ref_table[k][1] if ref_table.get(k, (0, 0))[1] else 0.0
                      for k in keys]
        else:
            theirs = [100 * counts.global_ratio] * len(keys)
        x = np.arange(len(keys))
        bars = ax.bar(x - 0.2, ours, 0.4, color=OKABE_ITO[0], label="selection")
        ax.bar(x + 0.2, theirs, 0.4, color=OKABE_ITO[8], label=label, hatch="//", edgecolor="white")
        if ax is type_ax:
            ax.set_xticks(x, names, rotation=30, ha="right", rotation_mode="anchor")
        else:
            ax.set_xticks(x, names)
        ax.set_ylabel("% of the group's entries selected")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        if ax is type_ax and counts.selected:
            shares = [_percent(100 * table[k][0] / counts.selected) for k in keys]
            ax.bar_label(bars, labels=shares, fontsize=7, padding=1)
    type_ax.set_title("per module type (labels: share of budget)", fontsize=10)
    type_ax.set_xlabel("module type")
    block_ax.set_title("per transformer block", fontsize=10)
    block_ax.set_xlabel("block")
    type_ax.legend(frameon=False, fontsize=8)
    ratio = 100 * counts.global_ratio
    fig.suptitle(title or f"What the selection took: {counts.selected:,} of {counts.total:,} entries "
                          f"({ratio:.2f}%)")
    return save_figure(fig, path)


def _percent(value: float) -> str:
    return "<1%" if 0 < value < 1 else f"{value:.0f}%"


def _history_points(history) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(history, Mapping):
        pairs = sorted(history.items())
    else:
        pairs = sorted((p["step"], p["selected"]) if isinstance(p, Mapping) else tuple(p) for p in history)
    if not pairs:
        raise FisherTuneError("selection history is empty: expected (step, selected_count) pairs")
    steps, selected = zip(*pairs)
    return np.asarray(steps, dtype=float), np.asarray(selected, dtype=float)


def selection_growth(history, path: PathLike, total: int | None = None, title: str | None = None) -> Path:
    """The selected-entry count over training steps (the δ(t) schedule as it ran). `history` is a list
    of (step, selected_count) pairs, a {step: selected_count} dict, or MaskSelector.history (dicts with
    "step" and "selected"); with `total` (the candidates) a right axis shows the count as a % of it."""
    steps, selected = _history_points(history)
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, selected, drawstyle="steps-post", color=OKABE_ITO[0], linewidth=1.8)
    ax.plot(steps, selected, "o", color=OKABE_ITO[0], markersize=3.5, label="re-selection")
    ax.annotate(f"{int(selected[-1]):,}", (steps[-1], selected[-1]), textcoords="offset points",
                xytext=(-4, 6), ha="right", fontsize=8)
    ax.set_xlabel("training step")
    ax.set_ylabel("selected entries")
    ax.set_ylim(0, selected.max() * 1.15 if selected.max() > 0 else 1)
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 5))
    if total:
        to_percent = (lambda c: 100 * c / total, lambda p: p * total / 100)
        secondary = ax.secondary_yaxis("right", functions=to_percent)
        secondary.set_ylabel("% of candidate entries")
    ax.legend(frameon=False, loc="lower right")
    ax.set_title(title or "Selection growth δ(t) over training")
    return save_figure(fig, path)


def _as_rgb(image: Any) -> np.ndarray:
    """HxWx3 (or 3xHxW) float in [0,1] or uint8 -> HxWx3 float in [0,1]."""
    array = to_numpy(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise FisherTuneError(f"an example image has shape {array.shape}; expected HxWx3 or 3xHxW")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _pixel_accuracy(pred: np.ndarray, label: np.ndarray) -> float | None:
    valid = label != IGNORE_INDEX
    return float((pred[valid] == label[valid]).mean()) if valid.any() else None


def prediction_grid(examples: Mapping[str, list], path: PathLike, methods: list[str] | None = None,
                    title: str | None = None) -> Path:
    """Rows = examples per domain; columns = image, ground truth, each method's prediction, coloured
    with the Cityscapes palette (ignore = black). Each prediction's title gives its pixel accuracy on
    the valid pixels. `examples[domain]` is a list of (image, label HxW, {method: prediction HxW})."""
    rows = [(domain, i, example) for domain, items in examples.items() for i, example in enumerate(items)]
    if not rows:
        raise FisherTuneError("no examples to plot")
    methods = methods or list(dict.fromkeys(m for _, _, (_, _, preds) in rows for m in preds))
    cols = ["image", "ground truth", *methods]
    fig = Figure(figsize=(1.9 * len(cols) + 0.6, 1.9 * len(rows) + 1.1), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), len(cols), squeeze=False))
    for r, (domain, i, (image, label, preds)) in enumerate(rows):
        label = to_numpy(label).astype(np.int64)
        panels = [(_as_rgb(image), "image"), (colorize(label), "ground truth")]
        for method in methods:
            if method not in preds:
                panels.append((None, method))
                continue
            pred = to_numpy(preds[method]).astype(np.int64)
            if pred.shape != label.shape:
                raise FisherTuneError(
                    f"{method}'s prediction for {domain} has shape {pred.shape}, its label {label.shape}")
            accuracy = _pixel_accuracy(pred, label)
            caption = method if accuracy is None else f"{method}\nacc {100 * accuracy:.0f}%"
            panels.append((colorize(pred), caption))
        for c, (picture, caption) in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if picture is None:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(picture, interpolation="nearest")
            ax.set_title(caption if (r == 0 or c >= 2) else "", fontsize=8)
        axes[r, 0].set_ylabel(domain if len(examples[domain]) == 1 else f"{domain} #{i + 1}", fontsize=9)
    handles = [Patch(color=PALETTE[i] / 255.0, label=name) for i, name in enumerate(CLASS_NAMES)]
    handles.append(Patch(facecolor="black", label="ignore"))
    fig.legend(handles=handles, loc="outside lower center", ncol=10, fontsize=7, frameon=False)
    fig.suptitle(title or "Example predictions per domain")
    return save_figure(fig, path)


def training_curves(log: list[Mapping[str, Any]], path: PathLike, title: str | None = None) -> Path:
    """The run's logged training loss per step (head warm-up and tuning told apart) and, on a second
    axis, the source validation mIoU wherever it was evaluated: what a run's log.jsonl holds."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for phase, colour in (("warmup", OKABE_ITO[1]), ("tune", OKABE_ITO[0])):
        points = [(r["step"], r["loss"]) for r in log if r.get("phase") == phase and "loss" in r]
        if points:
            label = "loss (head warm-up)" if phase == "warmup" else "loss (tuning)"
            ax.plot(*zip(*points), color=colour, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    val = [(r["step"], r["source_miou"]) for r in log
           if r.get("phase") == "val" and r.get("source_miou") is not None]
    handles, labels = ax.get_legend_handles_labels()
    if val:
        right = ax.twinx()
        right.plot(*zip(*val), "o-", color=OKABE_ITO[2], label="source_val mIoU (%)")
        right.set_ylabel("source_val mIoU (%)")
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:
        ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title(title or "training curves")
    fig.tight_layout()
    return save_figure(fig, path)


def source_val_curves(curves: Mapping[str, list], path: PathLike, title: str | None = None) -> Path:
    """Source validation mIoU against the training step, per variant: each seed's logged curve ([[step,
    mIoU], ...]) as a thin line, their point-by-point mean (where the seeds logged the same steps) thick."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    colors = method_colors(list(curves))
    for variant, runs in curves.items():
        color = colors[variant]
        for curve in runs:
            ax.plot(*zip(*curve), color=color, alpha=0.35, linewidth=0.8)
        steps = [s for s, _ in runs[0]]
        if all([s for s, _ in c] == steps for c in runs):
            mean = np.mean([[m for _, m in c] for c in runs], axis=0)
            ax.plot(steps, mean, "o-", color=color, linewidth=2, markersize=3,
                    label=f"{variant} (mean of {len(runs)})" if len(runs) > 1 else variant)
    ax.set_xlabel("step (head warm-up included)")
    ax.set_ylabel("source_val mIoU (%)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "source validation mIoU during training")
    fig.tight_layout()
    return save_figure(fig, path)
