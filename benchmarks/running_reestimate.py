"""How far the running-g² re-estimate (`reestimate: running`) is from the exact one, and what each costs.

On the demo setting (see training_probe.py; FisherTune's demo options, the IVON DR-FIM unless
--variational says otherwise): 2 head warm-up steps, prepare (the exact estimate, δ(0)), then --steps
training steps that record the running g² (every candidate's whole weight gradient). At that mask event
the growth to δ(steps) is chosen three ways from the same masks:
- running: the mean squared training gradient of those steps;
- exact: the exact re-estimate on the prepare batches, as `reestimate: exact` does;
- exact again: a second exact re-estimate (the next estimate's fresh perturbation draws and weight
  samples): how much the exact estimate agrees with itself.
Printed: the overlap of the entries each adds with those the exact re-estimate adds (|A ∩ B| / |B|, equal
sizes), and chance (a random choice among the free entries); the seconds of an exact re-estimate and of
the running g² (per step and over the steps), and of a training step.

    python benchmarks/running_reestimate.py [--steps 20] [--threads 2] [--crop 112] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from fishertune.engine.trainer import per_sample_loss
from fishertune.sparse import grow_masks
from training_probe import Probe


def added(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: new[n] & ~old[n] for n in old}


def overlap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """|a ∩ b| / |b|."""
    return sum(int((a[n] & b[n]).sum()) for n in b) / max(1, sum(int(m.sum()) for m in b.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps before the event (demo: 20)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variational", help="override FisherTune's variational option (e.g. off)")
    parser.add_argument("--crop", type=int, help="crop size (default: the demo's 112)")
    parser.add_argument("--batch", type=int, help="batch size (default: the demo's 8)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("command: python benchmarks/running_reestimate.py " + " ".join(sys.argv[1:]))
    probe = Probe("fishertune-running", update_every=10**9, crop=args.crop, batch=args.batch)
    fisher = probe.tuner.selector
    if args.variational:
        fisher.config.variational = args.variational
    cfg, d = fisher.config, probe.config.data
    print(f"demo setting (offline DINOv2-S, crop {d.crop}, batch {d.batch_size}), CPU, {args.threads} "
          f"threads; score {cfg.score}, variational {cfg.variational}, "
          f"{len(probe.prepare_batches)} prepare batches; growth δ(0) → δ({args.steps}) after "
          f"{args.steps} steps")
    for _ in range(2):
        probe.warm_up_head_step()
    probe.prepare()
    for i in range(args.steps):  # after_step records the running g² (no event: update_every is huge)
        probe.step(i)
    old = {n: m.clone() for n, m in fisher.masks.items()}
    ratio = fisher.ratio_at(args.steps)
    options = dict(granularity=cfg.granularity, scope=cfg.scope, max_per_tensor=cfg.max_per_tensor)
    running = added(grow_masks(old, fisher.take_running_scores(), ratio, **options), old)
    choices, seconds = [], []
    for _ in range(2):
        start = time.perf_counter()
        scores = fisher.estimate(probe.prepare_batches, per_sample_loss)
        seconds.append(time.perf_counter() - start)
        choices.append(added(grow_masks(old, scores, ratio, **options), old))
        fisher.release_estimates()
    exact, again = choices
    free = sum(int((~m).sum()) for m in old.values())
    count = sum(int(m.sum()) for m in exact.values())
    step = statistics.median(sum(v) for v in zip(*(probe.times[p][1:] for p in ("forward", "backward",
                                                                                  "optimiser"))))
    recording = statistics.median(probe.times["running g2"][1:])
    print(f"\nentries added at the event: {count:,} of {free:,} free")
    print(f"{'added by':<34}{'overlap with exact':>20}")
    print(f"{'running g² (reestimate: running)':<34}{overlap(running, exact):>20.3f}")
    print(f"{'exact again (fresh draws)':<34}{overlap(again, exact):>20.3f}")
    print(f"{'chance (random free entries)':<34}{count / free:>20.3f}")
    print(f"\n{'cost':<34}{'seconds':>10}{'in training steps':>20}")
    print(f"{'training step (fwd+bwd+optimiser)':<34}{step:>10.3f}{1:>20.2f}")
    exact_seconds = statistics.median(seconds)
    print(f"{'exact re-estimate':<34}{exact_seconds:>10.2f}{exact_seconds / step:>20.2f}")
    print(f"{'running g², per step':<34}{recording:>10.4f}{recording / step:>20.4f}")
    print(f"{f'running g², {args.steps} steps':<34}{recording * args.steps:>10.2f}"
          f"{recording * args.steps / step:>20.2f}")


if __name__ == "__main__":
    main()
