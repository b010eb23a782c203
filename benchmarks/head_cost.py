"""What a training step costs with each decode head, as a ratio to the linear head's (issue 23's head rule).

Full fine-tuning of the offline DINOv2-S on the demo setting (crop 112, batch 8 unless overridden): one
step is forward, backward and an AdamW step over every parameter, on fixed random batches. The heads run
one after the other within each of --repeats rounds (interleaved), in this process; medians over rounds.
docs/benchmark.md's rule takes `mask2former` when its step costs at most 3x the linear head's, else
`multilevel`.

    python benchmarks/head_cost.py [--repeats 3] [--steps 3] [--heads linear multilevel mask2former]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

from fishertune.engine.build import build_base
from training_probe import demo_config


def step_seconds(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    model.loss(batch["image"], batch["label"]).backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per head and round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--heads", nargs="+", default=["linear", "multilevel", "mask2former"])
    parser.add_argument("--crop", type=int)
    parser.add_argument("--batch", type=int)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("command: python benchmarks/head_cost.py " + " ".join(sys.argv[1:]))
    config = demo_config("full", {}, crop=args.crop, batch=args.batch)
    crop, size = config.data.crop, config.data.batch_size
    batch = {"image": torch.rand(size, 3, crop, crop), "label": torch.randint(0, 19, (size, crop, crop))}
    runs = {}
    for head in args.heads:
        model = build_base(dataclasses.replace(config, model=dataclasses.replace(config.model, head=head)))
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        step_seconds(model, optimizer, batch)  # warm-up: allocations, first-call costs
        runs[head] = (model, optimizer, [])
    for _ in range(args.repeats):
        for model, optimizer, times in runs.values():
            times.append(statistics.median(step_seconds(model, optimizer, batch) for _ in range(args.steps)))
    print(f"offline DINOv2-S, full fine-tuning, crop {crop}, batch {size}, CPU, {args.threads} threads; "
          f"median over {args.repeats} interleaved rounds of the median of {args.steps} steps")
    base = statistics.median(runs[args.heads[0]][2])
    for head, (_, _, times) in runs.items():
        seconds = statistics.median(times)
        print(f"{head:12s} step {seconds:6.3f} s   / {args.heads[0]}'s: {seconds / base:5.2f}")


if __name__ == "__main__":
    main()
