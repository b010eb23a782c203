"""The markdown report and the terminal table: values, bold cells, sections, atomic write."""

import numpy as np
import pytest
import torch
from scipy.stats import ttest_rel

from fishertune.report import plots
from fishertune.report.markdown import (
    format_count,
    format_selection_table,
    format_summary_table,
    print_summary_table,
    write_report,
)


def table(text, first_header_cell):
    """The markdown table starting at the header row whose first cell is given: {row name: cells}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header_cell} |"))
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def fmt(values):
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def test_main_table_values_and_bold_cells(tmp_path, multi_seed_results):
    text = write_report(tmp_path, multi_seed_results).read_text()
    rows = table(text, "method")
    assert rows["method"] == ["trainable params", "source mIoU", "fog mIoU", "night mIoU", "mean target mIoU",
                              "train seconds"]
    ours, full, frozen = rows["fishertune"], rows["full"], rows["frozen"]
    # source: full is best (mean 70.8 of 72, 70.5, 70)
    assert full[1] == f"**{fmt([72.0, 70.5, 70.0])}**"
    assert ours[1] == fmt([70.0, 71.0, 69.0]) and frozen[1] == fmt([60.0, 61.0, 62.0])
    # fog, night and mean target: ours is best
    assert ours[2] == f"**{fmt([50.0, 52.0, 51.0])}**" and full[2] == fmt([47.0, 48.0, 49.0])
    assert ours[3] == f"**{fmt([40.0, 41.0, 45.0])}**"
    assert ours[4] == f"**{fmt([45.0, 46.5, 48.0])}**"
    # trainable params are formatted, never ranked; train seconds: lowest is best
    assert (ours[0], full[0], frozen[0]) == ("1.0k", "22.00M", "0")
    assert frozen[5] == "**30**" and ours[5] == "60" and full[5] == "80"
    assert "Ranked by mean target mIoU: fishertune 46.5, full 40.8, frozen 31.0." in text


def test_ties_at_the_displayed_precision_are_all_bold(tmp_path, single_seed_results):
    single_seed_results["lora"]["target_miou"]["fog"] = 50.04  # shows as 50.0, like fishertune's 50.0
    rows = table(write_report(tmp_path, single_seed_results).read_text(), "method")
    assert rows["fishertune"][2] == "**50.0**" and rows["lora"][2] == "**50.0**"
    assert rows["lora"][1] == "**71.0**" and rows["fishertune"][1] == "70.0"
    assert rows["lora"][0] == "300.0k" and rows["fishertune"][0] == "1.20M"


def test_paired_section_with_seeds(tmp_path, multi_seed_results):
    text = write_report(tmp_path, multi_seed_results).read_text()
    assert "## Paired differences over seeds" in text
    rows = table(text, "baseline")
    night = np.array([40.0, 41.0, 45.0]) - [38.0, 33.0, 30.0]
    assert rows["full"][2].strip("*").startswith(f"{night.mean():+.1f} ± {night.std(ddof=1):.1f} (p=")
    assert rows["frozen"][0].startswith("**")  # +9 ± 1 over 3 seeds: beyond seed noise
    assert not rows["full"][0].startswith("**")  # source: mixed signs, within noise
    assert "- fishertune − full on mean target mIoU" in text
    assert "ttest_rel" in text
    # each cell gives the raw and the Holm-adjusted p of its column's family (2 baselines here)
    raw = ttest_rel([40.0, 41.0, 45.0], [38.0, 33.0, 30.0]).pvalue
    other = ttest_rel([40.0, 41.0, 45.0], [21.0, 20.0, 22.0]).pvalue  # frozen, by seed 0, 1, 2
    adjusted = min(1.0, 2 * raw) if raw <= other else max(min(1.0, 2 * other), raw)
    assert f"(p={raw:.2g}, Holm {adjusted:.2g})" in rows["full"][2]


def test_bootstrap_section(tmp_path, multi_seed_results):
    assert "## Bootstrap" not in write_report(tmp_path, multi_seed_results).read_text()
    boot = {"resamples": 1000, "seed": 0, "level": 0.95,
            "intervals": {"fishertune": {"fog": [49.0, 53.5], "night": [38.25, 46.0],
                                         "mean_target_miou": [44.0, 49.0]},
                          "frozen": {"fog": [40.0, 42.0], "night": [19.0, 23.0],
                                     "mean_target_miou": [30.0, 32.0]}}}
    text = write_report(tmp_path, {**multi_seed_results, "bootstrap": boot}).read_text()
    rows = table(text.split("## Bootstrap intervals over test images")[1], "method")
    assert rows["method"] == ["fog", "night", "mean target"]
    assert rows["fishertune"] == ["51.0 [49.0, 53.5]", "42.0 [38.2, 46.0]", "46.5 [44.0, 49.0]"]
    assert rows["frozen"][0] == "41.0 [40.0, 42.0]" and "full" not in rows
    assert "1000 resamples" in text and "95% percentile bootstrap" in text


def test_selection_section(tmp_path, multi_seed_results):
    selections = {"random_overlap": 0.0256, "variants": {
        "fishertune": {"selected": 1000, "candidates": 20000, "share_by_type": {"Q": 0.25, "FFN": 0.75},
                       "share_by_block": {"0": 0.4, "1": 0.6}, "overlap": {"random-select": 0.031}},
        "random-select": {"selected": 1000, "candidates": 20000, "share_by_type": {"FFN": 0.6, "V": 0.4},
                          "share_by_block": {"10": 0.3, "outside": 0.1, "2": 0.6},
                          "overlap": {"fishertune": 0.031}}}}
    text = write_report(tmp_path, {**multi_seed_results, "selections": selections}).read_text()
    section = text.split("## What the mask variants selected")[1]
    types = table(section, "share per module type")
    assert types["share per module type"] == ["selected", "Q", "FFN", "V"]
    assert types["fishertune"] == ["1,000", "25.0%", "75.0%", "0.0%"]
    assert types["random-select"] == ["1,000", "0.0%", "60.0%", "40.0%"]
    blocks = table(section, "share per block")
    assert blocks["share per block"] == ["selected", "outside", "0", "1", "2", "10"]  # block_shares' order
    assert blocks["fishertune"] == ["1,000", "0.0%", "40.0%", "60.0%", "0.0%", "0.0%"]
    assert blocks["random-select"] == ["1,000", "10.0%", "0.0%", "0.0%", "60.0%", "30.0%"]
    overlap = table(section, "Jaccard")
    assert overlap["fishertune"] == ["–", "3.1%"] and overlap["random-select"] == ["3.1%", "–"]
    assert "overlap by 2.6% on average" in section


def test_single_seed_report_says_it_cannot_separate_noise(tmp_path, single_seed_results):
    text = write_report(tmp_path, single_seed_results).read_text()
    assert "## Paired differences" not in text
    assert "cannot be told apart from seed noise" in text
    assert "fishertune ranks 1 of 2." in text


def test_a_single_run_report_asks_for_seeds_not_the_demo(tmp_path, single_seed_results):
    text = write_report(tmp_path, {"lora": single_seed_results["lora"]}).read_text()
    assert "One run with one seed" in text and "`train.seed`" in text
    assert "between methods" not in text and "fishertune demo" not in text


def test_setup_figures_and_notes(tmp_path, multi_seed_results):
    figure = plots.selection_growth([(0, 1), (10, 4)], tmp_path / "figures" / "growth.png")
    notes = ["Synthetic scenes only.", "One small backbone."]
    path = write_report(tmp_path, multi_seed_results, figures={"Selection growth": figure}, notes=notes)
    text = path.read_text()
    assert text.startswith("# ")
    assert "lightly fine-tuned it for saliency" in text
    assert "procedurally generated street scenes" in text
    assert "- **seeds**: 3 (0, 1, 2)" in text and "- **steps**: 300" in text
    assert "![Selection growth](figures/growth.png)" in text
    assert "- Synthetic scenes only.\n- One small backbone." in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "report.md"]  # no temp file left


def test_terminal_table(capsys, multi_seed_results):
    print_summary_table(multi_seed_results)
    out = capsys.readouterr().out
    assert out == format_summary_table(multi_seed_results) + "\n"
    full_row = next(line for line in out.splitlines() if line.startswith("full "))
    assert f"{fmt([72.0, 70.5, 70.0])}*" in full_row and "22.00M" in full_row
    assert "* best in column" in out
    assert "\x1b" not in out  # plain text


@pytest.mark.parametrize(("n", "text"), [(None, "–"), (0, "0"), (999, "999"), (12345, "12.3k"),
                                         (22_056_576, "22.06M")])
def test_format_count(n, text):
    assert format_count(n) == text


def test_selection_table():
    masks = {"encoder.layer.0.attention.q_proj.weight": torch.tensor([True, False, False, False]),
             "encoder.layer.0.mlp.fc2.weight": torch.ones(2999, dtype=torch.bool),
             "layernorm.weight": torch.zeros(5, dtype=torch.bool)}
    lines = format_selection_table(masks).splitlines()
    assert lines[0] == "| block | module | selected | entries | % of entries | % of selection |"
    assert lines[2:] == ["| outside blocks | norm | 0 | 5 | 0.00% | 0.00% |",
                         "| 0 | Q | 1 | 4 | 25.00% | 0.03% |",
                         "| 0 | FFN | 2,999 | 2,999 | 100.00% | 99.97% |"]


def test_learning_rates_tried_are_listed_with_the_choice_in_bold(tmp_path, multi_seed_results):
    sweep = {"full": {"lr": 3e-5, "source_val_miou": {"1e-05": 46.39, "3e-05": 46.42, "0.0001": 44.57}},
             "frozen": {"head_lr": 0.01, "source_val_miou": {"0.003": 44.19, "0.01": 45.24}}}
    text = write_report(tmp_path, {**multi_seed_results, "sweep": sweep}).read_text()
    rows = table(text.split("## Learning rates tried")[1], "method")
    assert rows["full"] == ["lr", "1e-05: 46.39, **3e-05: 46.42**, 0.0001: 44.57"]
    assert rows["frozen"] == ["head_lr", "0.003: 44.19, **0.01: 45.24**"]
    shared = {**sweep, "fim-select": {"lr": 3e-5, "as": "full"}}
    rows = table(write_report(tmp_path, {**multi_seed_results, "sweep": shared}).read_text()
                 .split("## Learning rates tried")[1], "method")
    assert rows["fim-select"] == ["lr", "**3e-05**, full's choice"]
    assert "## Learning rates tried" not in write_report(tmp_path, multi_seed_results).read_text()
