"""`fishertune fisher`: where DR-FIM puts a backbone's importance, before any tuning.

Runs the config's head warm-up (backbone frozen, `Trainer.warm_up_head`), then FisherTune's
estimate-and-select on the run's estimation batches (`Trainer.estimate`), and writes
  scores.safetensors   DR-FIM scores, the clean and perturbed curvature A, A' (the Fisher, or the
                       stabilised estimate) per backbone parameter, and the selected masks (as uint8),
                       under "dr_fim/", "fisher/", "fisher_perturbed/", "mask/" + parameter name;
                       metadata "draws" is the JSON list of each estimation batch's signed draws and
                       weight w_b (with one batch, DR-FIM can be recomputed from A, A' and the draws)
  heatmap.png          mean DR-FIM per entry, transformer blocks x module types (Q/K/V/proj/FFN/norm/...)
  selection.png        what the selection took per module type and block, against a random selection
  selection.csv, .md   selected / total entries per (block, module type)
  analysis.json        is the selection signal or noise (docs/method.md): the split-half reliability
                       (Spearman) of the task and domain terms, the Jaccard overlap of the selection
                       with FIM's (the plain Fisher's) and a random one's at the same budget, and the
                       share of the selection per module type; also printed and added to selection.md
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
from pathlib import Path

import torch

from fishertune.atomic import new_folder, save_tensors, write_json, write_text
from fishertune.engine import distributed
from fishertune.engine.config import Config, MethodConfig
from fishertune.engine.trainer import Trainer, per_sample_loss
from fishertune.errors import FisherTuneError
from fishertune.report.breakdown import block_shares, module_shares, selection_overlap, selection_rows
from fishertune.report.markdown import format_selection_table
from fishertune.report.plots import fisher_heatmap, selection_breakdown
from fishertune.sparse import empirical_fisher, select_topk
from fishertune.sparse.batching import batch_size
from fishertune.sparse.mask_selector import estimate_count, passes_per_estimate
from fishertune.sparse.reliability import split_half_reliability, term_influence


def fisher_map(config: Config, out_dir: str | Path, progress: bool = True) -> list[Path]:
    """Write the files above into `out_dir` (which must not hold anything yet); return their paths."""
    options = config.method.options if config.method.name == "fishertune" else {}
    config = dataclasses.replace(config, method=MethodConfig("fishertune", dict(options)),
                                 data=dataclasses.replace(config.data, val=None, targets=[]))
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FisherTuneError(f"{out_dir} already exists and is not empty; choose another --out")
    trainer = Trainer(config, out_dir, progress=progress)  # builds model, tuner and data
    trainer.folder.clean_up()  # the files come at the end: no lock, no folder until then
    trainer.warm_up_head()
    selector = trainer.estimate()
    analysis = selection_analysis(selector, trainer.estimation_batches, per_sample_loss)
    analysis["cost"] = estimation_cost(selector, config)
    written = [out_dir / "scores.safetensors", out_dir / "heatmap.png", out_dir / "selection.png",
               out_dir / "selection.csv", out_dir / "selection.md", out_dir / "analysis.json"]
    if not distributed.is_main():  # under torchrun every process estimated (all-reduced); rank 0 writes
        return written

    lines = format_analysis(analysis)
    with new_folder(out_dir, "fisher") as temp:  # a failure (a full disk) leaves nothing
        write_outputs([temp / path.name for path in written], selector, analysis, lines)
    print("\n".join(lines))
    return written


def write_outputs(paths: list[Path], selector, analysis: dict, lines: list[str]) -> None:
    """scores.safetensors, heatmap.png, selection.png, selection.csv, selection.md, analysis.json."""
    masks = selector.masks
    tensors = {}
    for prefix, values in (("dr_fim", selector.scores), ("fisher", selector.fisher),
                           ("fisher_perturbed", selector.fisher_perturbed), ("mask", masks)):
        for name, tensor in values.items():
            tensors[f"{prefix}/{name}"] = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    save_tensors(paths[0], tensors, metadata={"draws": json.dumps(selector.draws)})
    fisher_heatmap(selector.scores, paths[1])
    selection_breakdown(masks, paths[2])
    rows = selection_rows(masks)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({**row, "block": "outside" if row["block"] is None else row["block"]} for row in rows)
    write_text(paths[3], table.getvalue())
    write_text(paths[4], format_selection_table(masks) + "\n" + "\n".join(lines) + "\n")
    write_json(paths[5], analysis)


def selection_analysis(selector, batches: list, loss_fn) -> dict:
    """Signal or noise: split-half reliability of both terms, overlap with FIM's and a random selection
    at the same budget, and where the budget went by module type."""
    cfg, model = selector.config, selector.model
    was_training = model.training
    model.eval()
    try:
        fim = empirical_fisher(model, batches, loss_fn, selector.candidates, per_sample=cfg.per_sample,
                               chunk_size=cfg.chunk_size)
    finally:
        model.train(was_training)
    generator = torch.Generator().manual_seed(cfg.seed)
    random_scores = {n: torch.rand(s.shape, generator=generator) for n, s in selector.scores.items()}
    budget = {"count": selector.num_selected(), "granularity": cfg.granularity, "scope": cfg.scope}
    sample_weights = [w for d in selector.draws for w in d["sample_weights"]]
    influence = (term_influence(selector.terms["task"], selector.terms["domain"], selector.num_selected())
                 if selector.terms else {})
    return {"estimation_images": sum(batch_size(b) for b in batches),
            "reliability": split_half_reliability(model, cfg, batches, loss_fn),
            "influence": influence,
            "overlap": {"fim": selection_overlap(selector.masks, select_topk(fim, **budget)),
                        "random": selection_overlap(selector.masks, select_topk(random_scores, **budget))},
            "module_share": module_shares(selector.masks),
            "block_share": block_shares(selector.masks),
            "draw_weights": [d["weight"] for d in selector.draws],
            "sample_weights": spread(sample_weights) if sample_weights else None}


def estimation_cost(selector, config: Config) -> dict:
    """What the config's whole schedule spends on estimates, in forward-backward passes over one batch,
    against its training passes (steps x gradient accumulation)."""
    t = config.train
    estimates = estimate_count(selector.config, t.steps)
    per = passes_per_estimate(selector.config, t.prepare_batches)
    training = t.steps * t.grad_accum
    return {"estimates": estimates, "passes_per_estimate": per, "estimate_passes": estimates * per,
            "training_passes": training, "ratio": estimates * per / training}


def spread(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "max": max(values), "std": statistics.pstdev(values)}


def format_analysis(analysis: dict) -> list[str]:
    r, o = analysis["reliability"], analysis["overlap"]
    shares = ", ".join(f"{m} {100 * v:.1f}%" for m, v in analysis["module_share"].items())
    blocks = ", ".join(f"{b} {100 * v:.1f}%" for b, v in analysis["block_share"].items())
    lines = [f"Estimation images: {analysis['estimation_images']}; split-half reliability (Spearman, "
             f"{r['images_per_half']} images per half): task term {r['task']:.3f}, "
             f"domain term {r['domain']:.3f}, DR-FIM {r['dr_fim']:.3f}"]
    for term, values in analysis["influence"].items():
        lines.append(f"The {term} term alone would select {100 * values['share']:.1f}% of the selection; "
                     f"Spearman(DR-FIM, {term} term) {values['spearman']:.3f}")
    lines += [f"Overlap (Jaccard) of the selection with FIM's: {100 * o['fim']:.1f}%, with a random one's: "
              f"{100 * o['random']:.1f}%",
              f"Share of the selection per module type: {shares}",
              f"Share of the selection per block: {blocks}",
              "Domain-term weight w_b per estimation batch: "
              + ", ".join(f"{w:.3f}" for w in analysis["draw_weights"])]
    if analysis.get("sample_weights"):
        w = analysis["sample_weights"]
        lines.append(f"Per-sample draw weights w_n ({w['n']}): {w['min']:.3f} to {w['max']:.3f}, "
                     f"std {w['std']:.3f}")
    if analysis.get("cost"):
        c = analysis["cost"]
        lines.append(f"Estimation cost at this config's schedule: {c['estimates']} estimates x "
                     f"{c['passes_per_estimate']} passes = {c['estimate_passes']} passes against "
                     f"{c['training_passes']} training passes ({100 * c['ratio']:.2f}%)")
    return lines
