"""Does the layerwise per-sample Fisher select what the vmap one selects, and how much faster is it?

On the demo's model and 16 source estimation images (offline DINOv2-S, linear head warmed up 40 steps,
as benchmarks/estimator_choice.py builds them), FisherTune's shipped estimate and 5% selection are made
with the vmap backend (one sample per call, the setting shipped before the layerwise backend) and with
the layerwise backend at each chunk size, interleaved over --repeats rounds. Printed per setting: the
largest score difference relative to each tensor's largest score, the Jaccard overlap of the selection
with vmap's, and the estimate's seconds (minimum over the rounds) and ratio to vmap's. The criterion
applied to these numbers is benchmarks/results/layerwise/CRITERION.md.

    python benchmarks/layerwise_agreement.py --out benchmarks/results/layerwise [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from estimator_choice import BUDGET, build
from fishertune.atomic import write_json, write_text
from fishertune.engine.trainer import per_sample_loss
from fishertune.report.breakdown import selection_overlap
from fishertune.sparse import MaskSelector

SETTINGS = {"vmap, 1 sample per call": {"backend": "vmap", "chunk_size": 1},
            **{f"layerwise, {c} per pass": {"backend": "layerwise", "chunk_size": c} for c in (8, 4, 2, 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    trainer, batches = build(args.out, quick=False)
    base = dataclasses.replace(trainer.tuner.selector.config, ratio=BUDGET, count=None, ratio_min=None,
                               growth_start=None)
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    results: dict[str, tuple[dict, dict]] = {}
    fisher: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, options in SETTINGS.items():
            selector = MaskSelector(trainer.model, dataclasses.replace(base, **options))
            start = time.perf_counter()
            scores = selector.estimate(batches, per_sample_loss)
            seconds[name].append(time.perf_counter() - start)
            results[name] = (scores, selector.select())
            fisher[name] = selector.fisher
    reference = next(iter(SETTINGS))
    reference_scores, reference_masks = results[reference]
    reference_time = min(seconds[reference])
    largest = max(float(f.max()) for f in fisher[reference].values())
    zero = {n for n, f in fisher[reference].items() if float(f.max()) < 1e-10 * largest}
    rows = {"zero_fisher_tensors": sorted(zero)}
    lines = [f"{len(zero)} tensors have an exact Fisher of 0 up to rounding (clean Fisher below 1e-10 of the "
             "largest; e.g. attention key biases, which softmax ignores): their scores are rounding noise in "
             "every backend.", "",
             "| setting | largest score difference (relative), all tensors | the others | selection overlap "
             "with vmap's | estimate, s | / vmap's |", "|---|---:|---:|---:|---:|---:|"]

    def difference(scores: dict, names) -> float:
        return max((float((scores[n] - reference_scores[n]).abs().max() / reference_scores[n].abs().max())
                    for n in names if reference_scores[n].abs().max() > 0), default=0.0)

    for name, (scores, masks) in results.items():
        rows[name] = {"score_difference": difference(scores, scores),
                      "score_difference_nonzero_fisher": difference(scores, set(scores) - zero),
                      "overlap": selection_overlap(masks, reference_masks),
                      "seconds": min(seconds[name]), "ratio": min(seconds[name]) / reference_time}
        r = rows[name]
        lines.append(f"| {name} | {r['score_difference']:.1e} | {r['score_difference_nonzero_fisher']:.1e} "
                     f"| {r['overlap']:.4f} | {r['seconds']:.1f} | {r['ratio']:.2f} |")
    print("\n".join(lines))
    write_json(args.out / "agreement.json", rows)
    write_text(args.out / "agreement.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
