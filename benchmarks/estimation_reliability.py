"""Is DR-FIM's domain term signal or noise at an affordable number of estimation images?

For each curvature estimate (plain Fisher, IVON, VOGN) and number of estimation batches, runs
`fishertune fisher` on the embedded benchmark's *source* data (never a target domain) with the demo's
backbone, head warm-up and FisherTune options, and prints the split-half reliability (Spearman) of the
task and domain terms, the selection's overlap with FIM's and a random one's, the share of the selection
in Q, K, V and FFN, and the seconds it took.

    python benchmarks/estimation_reliability.py --out runs/reliability [--batches 1,2,4] [--quick]

Results are written to OUT/table.md (and one `fishertune fisher` folder per setting, reused if present).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from fishertune.engine.config import load_config
from fishertune.engine.fisher_map import fisher_map

ESTIMATES = {"plain": {"variational": "off"}, "ivon": {"variational": "ivon"},
             "vogn": {"variational": "vogn"}}
OPTIONS = {"budget": 0.05, "exclude": ["*embeddings*"]}  # the demo's FisherTune selection, initial budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/reliability")
    parser.add_argument("--batches", default="1,2,4", help="numbers of 8-image estimation batches")
    parser.add_argument("--estimates", default=",".join(ESTIMATES))
    parser.add_argument("--quick", action="store_true", help="tiny random backbone (a smoke run)")
    args = parser.parse_args()
    out = Path(args.out)
    from fishertune.benchmark.synthetic import generate

    data = out / "data"
    if not (data / "source").is_dir():
        generate(data, ["source"], n=96, size=126, seed=0, progress=False)
    rows = []
    for estimate in args.estimates.split(","):
        for batches in (int(b) for b in args.batches.split(",")):
            run = out / f"{estimate}-b{batches}"
            config = {"base": ["protocols/synthetic.yaml",
                               "backbones/tiny.yaml" if args.quick else "backbones/dinov2_s_offline.yaml",
                               "methods/fishertune.yaml"],
                      "method": {"options": {**OPTIONS, **ESTIMATES[estimate]}},
                      "data": {"train": f"folder:{(data / 'source').resolve()}", "val": None, "targets": [],
                               "crop": 112, "batch_size": 8},
                      "train": {"warmup_steps": 40, "head_lr": 1.0e-2, "prepare_batches": batches, "seed": 0}}
            path = out / f"{estimate}-b{batches}.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            start = time.perf_counter()
            if not (run / "analysis.json").is_file():
                fisher_map(load_config(path), run, progress=False)
            analysis = json.loads((run / "analysis.json").read_text())
            rows.append((estimate, 8 * batches, analysis, time.perf_counter() - start))
    lines = ["| estimate | images | reliability task | reliability domain | overlap FIM | overlap random | "
             "Q | K | V | FFN | s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for estimate, images, a, seconds in rows:
        r, o, share = a["reliability"], a["overlap"], a["module_share"]
        lines.append(f"| {estimate} | {images} | {r['task']:.3f} | {r['domain']:.3f} | "
                     f"{100 * o['fim']:.1f}% | {100 * o['random']:.1f}% | "
                     + " | ".join(f"{100 * share.get(m, 0):.1f}%" for m in ("Q", "K", "V", "FFN"))
                     + f" | {seconds:.0f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
