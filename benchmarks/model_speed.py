"""Seconds per image of each decode head on the offline DINOv2-S, at 224 and 512 px, on CPU.

forward: `Segmentor.forward` in eval mode without gradients (inference, one pass);
fwd+bwd: `Segmentor.loss` + backward in train mode with every parameter trainable (full fine-tuning).
Median of `--reps` timed repetitions after one warm-up, 2 threads, seeded inputs. Run alone: parallel jobs
on a 2-core machine distort every timing.

    python benchmarks/model_speed.py [--reps 2] [--sizes 224 512] [--heads linear multilevel mask2former]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fishertune.models import build_segmentor


def seconds(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(head: str, size: int, batch: int, reps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_segmentor("dinov2_s_offline", head)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g)
    labels = torch.randint(0, 19, (batch, size, size), generator=g)

    def forward():
        with torch.no_grad():
            model(images)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model.loss(images, labels).backward()

    model.eval()
    fwd = seconds(forward, reps)
    model.train()
    both = seconds(forward_backward, reps)
    return fwd / batch, both / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--heads", nargs="+", default=["linear", "multilevel", "mask2former"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"offline DINOv2-S/14, CPU, {args.threads} threads, median of {args.reps} reps; seconds per image")
    print(f"{'head':<12} {'px':>4} {'batch':>5} {'forward':>9} {'fwd+bwd':>9}")
    for size in args.sizes:
        batch = 2 if size <= 224 else 1
        for head in args.heads:
            fwd, both = measure(head, size, batch, args.reps)
            print(f"{head:<12} {size:>4} {batch:>5} {fwd:>9.3f} {both:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
