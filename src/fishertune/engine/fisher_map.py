"""`fishertune fisher`: where DR-FIM puts a backbone's importance, before any tuning.

Runs the config's head warm-up (backbone frozen), then FisherTune's estimate-and-select on the tuner's
prepare batches, and writes
  scores.safetensors   DR-FIM scores, clean Fisher F and perturbed Fisher F' per backbone parameter,
                       and the selected masks (as uint8), under "dr_fim/", "fisher/", "fisher_perturbed/",
                       "mask/" + parameter name; metadata "draws" is the JSON of the perturbation's
                       {"eps_mu", "eps_sigma"}, so DR-FIM can be recomputed from F and F' under any setting
  heatmap.png          mean DR-FIM per entry, transformer blocks x module types (Q/K/V/proj/FFN/norm/...)
  selection.png        what the selection took per module type and block, against a random selection
  selection.csv, .md   selected / total entries per (block, module type)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import torch

from fishertune.atomic import save_tensors, write_text
from fishertune.engine import distributed
from fishertune.engine.config import Config, MethodConfig
from fishertune.errors import FisherTuneError


def fisher_map(config: Config, out_dir: str | Path, progress: bool = True) -> list[Path]:
    """Write the files above into `out_dir` (which must not hold anything yet); return their paths."""
    from fishertune import report
    from fishertune.engine.trainer import Trainer, per_sample_loss, prepare_batches, source_batches

    options = config.method.options if config.method.name == "fishertune" else {}
    config = dataclasses.replace(config, method=MethodConfig("fishertune", dict(options)),
                                 data=dataclasses.replace(config.data, val=None, targets=[]))
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FisherTuneError(f"{out_dir} already exists and is not empty; choose another --out")
    trainer = Trainer(config, out_dir, progress=progress)  # builds model, tuner and data
    trainer.prepare = prepare_batches(trainer.train_set, config)
    batches = source_batches(trainer.train_set, config, start=0)
    trainer.enter_phase("warmup")
    for step in range(config.train.warmup_steps):
        trainer.train_step(step, batches)
    trainer.tuner.prepare(trainer.prepare, per_sample_loss)
    batches.close()
    estimate = trainer.tuner.fisher_tuner
    masks = estimate.masks
    written = [out_dir / "scores.safetensors", out_dir / "heatmap.png", out_dir / "selection.png",
               out_dir / "selection.csv", out_dir / "selection.md"]
    if not distributed.is_main():  # under torchrun every process estimated (all-reduced); rank 0 writes
        return written

    tensors = {}
    for prefix, values in (("dr_fim", estimate.scores), ("fisher", estimate.fisher),
                           ("fisher_perturbed", estimate.fisher_perturbed), ("mask", masks)):
        for name, tensor in values.items():
            tensors[f"{prefix}/{name}"] = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    save_tensors(written[0], tensors, metadata={"draws": json.dumps(estimate.draws)})
    report.fisher_heatmap(estimate.scores, written[1])
    report.selection_breakdown(masks, written[2])
    rows = report.selection_rows(masks)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({**row, "block": "outside" if row["block"] is None else row["block"]} for row in rows)
    write_text(written[3], table.getvalue())
    write_text(written[4], report.format_selection_table(masks) + "\n")
    return written
