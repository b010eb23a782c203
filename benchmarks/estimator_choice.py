"""Which curvature estimate and which DR-FIM combination FisherTune ships: measured on source images only.

Applies the criterion written in benchmarks/results/estimator_choice/CRITERION.md before any of these
numbers were seen: (a) the cheapest non-negative variational estimate whose task-term split-half
reliability is at least the plain Fisher's; (b) on it, the first combination (normalize + draw-weight
reading, the paper's raw sum first) under which both terms act (each term alone selects at most 80% of
DR-FIM's top 5%) and DR-FIM's split-half reliability is at least 0.5.

The model is the demo's (offline DINOv2-S, linear head warmed up 40 steps on the synthetic `source`
domain), estimated on 16 source images (2 batches of 8) with the demo's FisherTune candidates (backbone
without embeddings), perturbation in blocks 0-1. For each setting it prints the split-half reliability
of the task term, the domain term and DR-FIM, each term's share of the selection and Spearman with DR,
the budget by module type and in the deep half of the blocks, the spread of the draw weights, and the
seconds taken. Results: OUT/results.json and OUT/table.md; a finished setting is reused on a rerun.

    python benchmarks/estimator_choice.py --out benchmarks/results/estimator_choice [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from fishertune.atomic import write_json, write_text
from fishertune.engine.config import load_config
from fishertune.engine.trainer import Trainer, per_sample_loss
from fishertune.report.breakdown import count_selection, module_shares
from fishertune.sparse import MaskSelector
from fishertune.sparse.reliability import split_half_reliability, term_influence

ESTIMATES = {  # name: (options, gradient passes per batch and stream)
    "plain": ({"variational": "off"}, 1),
    "vogn-1": ({"variational": "vogn", "var_samples": 1}, 1),
    "vogn-pair": ({"variational": "vogn", "var_samples": 2}, 2),
    "vogn-1-tau1e-4": ({"variational": "vogn", "var_samples": 1, "var_tau": 1e-4}, 1),
    "vogn-pair-floor1": ({"variational": "vogn", "var_samples": 2, "var_floor": 1.0}, 2),
    "ivon-2": ({"variational": "ivon", "var_samples": 2}, 4),
    "ivon-8": ({"variational": "ivon", "var_samples": 8}, 16),
    "ivon-32": ({"variational": "ivon", "var_samples": 32}, 64),
}
COMBINATIONS = [(n, w) for n in ("none", "per_tensor", "mean", "rank") for w in ("paper", "sample")]
BUDGET = 0.05
MAX_SHARE, MIN_RELIABILITY = 0.8, 0.5


def build(out: Path, quick: bool) -> tuple[Trainer, list]:
    from fishertune.benchmark.synthetic import generate

    data = out / "data"
    if not (data / "source" / "images").is_dir():
        generate(data, ["source"], n=96, size=126, seed=0, progress=False)
    config = {"base": ["protocols/synthetic.yaml",
                       "backbones/tiny.yaml" if quick else "backbones/dinov2_s_offline.yaml",
                       "methods/fishertune.yaml"],
              "method": {"options": {"budget": BUDGET}},
              "data": {"train": f"folder:{(data / 'source').resolve()}", "val": None, "targets": [],
                       "crop": 112, "batch_size": 8},
              "train": {"warmup_steps": 40, "head_lr": 1.0e-2, "prepare_batches": 2, "seed": 0}}
    path = out / "config.yaml"
    import yaml

    write_text(path, yaml.safe_dump(config, sort_keys=False))
    trainer = Trainer(load_config(path), out / "run", progress=False)
    trainer.folder.clean_up()
    trainer.warm_up_head()
    return trainer, trainer.estimation_batches


def measure(trainer: Trainer, batches: list, options: dict) -> dict:
    base = trainer.tuner.selector.config
    config = dataclasses.replace(base, **options, ratio=BUDGET, count=None, ratio_min=None,
                                 growth_start=None)
    start = time.perf_counter()
    selector = MaskSelector(trainer.model, config, keep_terms=True)
    selector.estimate(batches, per_sample_loss)
    selector.select()
    count = selector.num_selected()
    task, domain = selector.terms["task"], selector.terms["domain"]
    counts = count_selection(selector.masks)
    blocks = sorted(b for b in counts.by_block if b is not None)
    deep = sum(counts.by_block[b][0] for b in blocks[len(blocks) // 2:]) / max(count, 1)
    sample_weights = [w for d in selector.draws for w in d["sample_weights"]]
    weights = sample_weights or [d["weight"] for d in selector.draws]
    result = {"influence": term_influence(task, domain, count),
              "negative_share": float((task < 0).float().mean()),
              "module_share": module_shares(selector.masks), "deep_share": deep,
              "weights": {"n": len(weights), "min": min(weights), "max": max(weights),
                          "std": statistics.pstdev(weights)}}
    del selector, task, domain
    result["reliability"] = split_half_reliability(trainer.model, config, batches, per_sample_loss)
    result["seconds"] = time.perf_counter() - start
    return result


def choose(results: dict) -> dict:
    """The criterion of CRITERION.md, applied to the measured results."""
    plain = results["plain|none|paper"]["reliability"]["task"]
    curvature = None
    for name, _ in sorted(ESTIMATES.items(), key=lambda item: item[1][1]):  # cheapest first
        r = results.get(f"{name}|none|paper")
        if name == "plain" or r is None:
            continue
        if r["negative_share"] == 0 and r["reliability"]["task"] >= plain:
            curvature = name
            break
    chosen = None
    for normalize, weighting in COMBINATIONS:
        r = results.get(f"{curvature}|{normalize}|{weighting}")
        if r is None:
            continue
        shares = [r["influence"][t]["share"] for t in ("task", "domain")]
        if max(shares) <= MAX_SHARE and r["reliability"]["dr_fim"] >= MIN_RELIABILITY:
            chosen = (normalize, weighting)
            break
    return {"plain_task_reliability": plain, "curvature": curvature, "combination": chosen}


def table(results: dict) -> str:
    lines = ["| estimate | normalize | weight | rel. task | rel. domain | rel. DR | share task "
             "| share domain | ρ(DR,task) | ρ(DR,domain) | Q | K | V | proj | FFN | deep half "
             "| w min–max (std) | s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for key, r in results.items():
        estimate, normalize, weighting = key.split("|")
        rel, inf, m, w = r["reliability"], r["influence"], r["module_share"], r["weights"]
        lines.append(f"| {estimate} | {normalize} | {weighting} | {rel['task']:.3f} | {rel['domain']:.3f} | "
                     f"{rel['dr_fim']:.3f} | {inf['task']['share']:.2f} | {inf['domain']['share']:.2f} | "
                     f"{inf['task']['spearman']:.2f} | {inf['domain']['spearman']:.2f} | "
                     + " | ".join(f"{100 * m.get(k, 0):.1f}%" for k in ("Q", "K", "V", "proj", "FFN"))
                     + f" | {100 * r['deep_share']:.1f}% | {w['min']:.3f}–{w['max']:.3f} ({w['std']:.3f}) | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/estimator_choice")
    parser.add_argument("--quick", action="store_true", help="tiny random backbone (a smoke run)")
    parser.add_argument("--settings", default=None,
                        help="comma-separated estimate|normalize|weight keys (default: the criterion's)")
    args = parser.parse_args()
    out = Path(args.out)
    torch.manual_seed(0)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    state = {"trainer": None}

    def run(keys: list[str]) -> None:
        for key in keys:
            if key in results:
                continue
            if state["trainer"] is None:
                state["trainer"], state["batches"] = build(out, args.quick)
            estimate, normalize, weighting = key.split("|")
            options = ESTIMATES[estimate][0] | {"normalize": normalize, "domain_weight": weighting,
                                                "exclude": ["*embeddings*"]}
            results[key] = measure(state["trainer"], state["batches"], options)
            write_json(path, results)
            print(table({key: results[key]}).splitlines()[-1], flush=True)

    if args.settings:
        run(args.settings.split(","))
    else:  # (a) the estimates under the paper's raw sum, then (b) every combination on (a)'s choice
        run([f"{e}|none|paper" for e in ESTIMATES])
        curvature = choose(results)["curvature"]
        if curvature is not None:
            run([f"{curvature}|{n}|{w}" for n, w in COMBINATIONS])
    write_text(out / "table.md", table(results))
    decision = choose(results)
    write_json(out / "choice.json", decision)
    print(table(results))
    print(f"criterion (CRITERION.md): {decision}")


if __name__ == "__main__":
    main()
