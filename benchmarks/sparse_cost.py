"""Selection and MaskedAdamW, before and after the rewrite, on the demo model's candidate shapes.

Builds random scores with the shapes of the offline DINOv2-S backbone's candidates (embeddings excluded,
as in the demo: about 21.3M entries in 216 tensors) and times, interleaved and repeated in one process:
- selection: the earlier sort-based `select_topk` (kept in tests/sparse/selection_reference.py) against
  the threshold one, at the demo's first selection (2%) and a growth step (5% keeping the 2%), at element
  and row granularity; the masks are checked identical;
- optimiser step: the earlier per-tensor MaskedAdamW (tests/sparse/masked_adamw_reference.py) against the
  flat-buffer one and torch.optim.AdamW (dense, foreach) over the same parameters, at 1% and 5%.
Prints medians over --repeats and the ratios new/old (and / dense AdamW), and MaskedAdamW's state memory
as a ratio to dense AdamW's. `--parts optimiser` skips the (slow) selection part.

    python benchmarks/sparse_cost.py [--repeats 5] [--threads 2] [--parts selection optimiser]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sparse"))
from masked_adamw_reference import ReferenceMaskedAdamW  # noqa: E402
from selection_reference import reference_select_topk  # noqa: E402

from fishertune.models import build_segmentor  # noqa: E402
from fishertune.sparse import MaskedAdamW, select_topk  # noqa: E402
from training_probe import median_seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=("selection", "optimiser"),
                        default=["selection", "optimiser"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_segmentor({"name": "dinov2_s_offline", "out_indices": [3, 5, 7, 11]}, "linear")
    params = {n: p for n, p in model.named_parameters()
              if n.startswith("backbone.") and "embeddings" not in n}
    g = torch.Generator().manual_seed(0)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in params.items()}
    total = sum(s.numel() for s in scores.values())
    print(f"command: python benchmarks/sparse_cost.py --repeats {args.repeats} --threads {args.threads} "
          f"--parts {' '.join(args.parts)}")
    print(f"{len(scores)} candidate tensors, {total:,} entries (offline DINOv2-S, embeddings excluded); "
          f"CPU, {args.threads} threads, median of {args.repeats} interleaved repeats, wall clock")
    if "selection" in args.parts:
        time_selection(scores, args.repeats)
    if "optimiser" in args.parts:
        time_optimiser(params, scores, args.repeats, g)


def time_selection(scores: dict[str, torch.Tensor], repeats: int) -> None:
    print(f"\n{'selection':<34}{'before s':>10}{'after s':>10}{'after/before':>14}")
    for granularity in ("element", "row"):
        first = select_topk(scores, ratio=0.02, granularity=granularity)
        for label, kwargs in (("2% (first selection)", dict(ratio=0.02)),
                              ("5% keeping 2% (growth)", dict(ratio=0.05, keep=first))):
            before = partial(reference_select_topk, scores, granularity=granularity, **kwargs)
            after = partial(select_topk, scores, granularity=granularity, **kwargs)
            new, old = after(), before()  # (also the warm-up)
            assert all(torch.equal(new[n], old[n]) for n in scores), "masks differ"
            t = median_seconds({"before": before, "after": after}, repeats, warm_up=False)
            print(f"{granularity + ', ' + label:<34}{t['before']:>10.3f}{t['after']:>10.3f}"
                  f"{t['after'] / t['before']:>14.2f}", flush=True)


def time_optimiser(params: dict[str, torch.Tensor], scores: dict[str, torch.Tensor], repeats: int,
                   g: torch.Generator) -> None:
    print(f"\n{'optimiser step':<22}{'dense AdamW ms':>15}{'before ms':>11}{'after ms':>10}"
          f"{'after/before':>14}{'after/dense':>13}")
    for p in params.values():
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    named = list(params.items())
    dense = torch.optim.AdamW([p for _, p in named], lr=1e-4)
    for ratio in (0.01, 0.05):
        masks = select_topk(scores, ratio=ratio)
        before = ReferenceMaskedAdamW(named, masks, lr=1e-4)
        after = MaskedAdamW(named, masks, lr=1e-4)
        t = median_seconds({"dense": dense.step, "before": before.step, "after": after.step}, repeats)
        print(f"{f'{ratio:.0%} selected':<22}{1e3 * t['dense']:>15.1f}{1e3 * t['before']:>11.1f}"
              f"{1e3 * t['after']:>10.1f}{t['after'] / t['before']:>14.2f}{t['after'] / t['dense']:>13.2f}",
              flush=True)
        dense_bytes = sum(v.numel() * v.element_size() for s in dense.state.values() for v in s.values())
        print(f"{'':<22}state: {after.state_bytes() / 2**20:.1f} MB = "
              f"{after.state_bytes() / dense_bytes:.3f}x dense AdamW's {dense_bytes / 2**20:.0f} MB "
              f"(before: {before.state_bytes() / dense_bytes:.3f}x)")


if __name__ == "__main__":
    main()
