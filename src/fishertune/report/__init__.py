"""Plots and the markdown report, drawn from plain dicts/tensors (results.json, scores, masks)."""

from fishertune.report.breakdown import aggregate_scores, count_selection, selection_rows
from fishertune.report.markdown import (
    format_selection_table,
    format_summary_table,
    print_summary_table,
    write_report,
)
from fishertune.report.naming import MODULE_TYPES, parse_param_name
from fishertune.report.plots import (
    fisher_heatmap,
    miou_bars,
    prediction_grid,
    selection_breakdown,
    selection_growth,
    training_curves,
)
from fishertune.report.stats import paired_differences, summarize

__all__ = [
    "MODULE_TYPES", "aggregate_scores", "count_selection", "fisher_heatmap", "format_selection_table",
    "format_summary_table", "miou_bars", "paired_differences", "parse_param_name", "prediction_grid",
    "print_summary_table", "selection_breakdown", "selection_growth", "selection_rows", "summarize",
    "training_curves", "write_report",
]
