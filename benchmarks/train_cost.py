"""Where the training time goes: each method's phases as ratios to full fine-tuning's, on the demo setting.

Every variant trains the same random batches (see training_probe.py): 2 head warm-up steps, the tuner's
prepare (Fisher estimation + selection), then --steps tuning steps with a mask event (re-estimation +
growth) every --update-every steps. The variants run one after the other within each of --repeats
rounds (interleaved), all in this process; medians over the rounds. Printed:
1. per step: forward, backward, optimiser (MaskedAdamW applies the masks), the running g² (reestimate
   "running" only), and their sum, / full's;
2. one-off work per call: prepare's estimation and selection, a mask event's estimation and selection;
3. the demo's whole training (40 warm-up + 120 tuning steps, mask events at each variant's schedule, none
   after the last step), estimation included, modelled from 1 and 2, / full's;
4. the same at a real protocol's proportions (40k steps, 8 estimation batches), warm-up left out.
The variants are the demo plan's (fishertune: as shipped; drfim, fim and random:
drfim-select, fim-select and random-select), plus full fine-tuning with activation checkpointing and
with bf16 autocast (`train.amp: bf16`), the random mask at row granularity, fishertune-row and
fishertune-running, FisherTune with the vmap backend (one sample per call, or the whole batch) and
FisherTune estimating once (`reestimate: off`).

    python benchmarks/train_cost.py [--repeats 2] [--steps 4] [--update-every 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

import torch

from fishertune.engine.build import build_model
from training_probe import Probe, demo_config, demo_plan, variants

VARIANTS = [("full", {}), ("full, checkpointing", {"checkpointing": True}),
            ("full, bf16", {"amp": "bf16"}), ("lora", {}), ("random", {}), ("random-row", {}), ("fim", {}),
            ("drfim", {}), ("fishertune", {}),
            *[(f"fishertune, chunk_size {c}", {"chunk_size": c}) for c in (8, 4, 2, 1)],
            ("fishertune, vmap", {"backend": "vmap"}), ("fishertune, reestimate off", {"reestimate": "off"}),
            ("fishertune-row", {}), ("fishertune-running", {})]
STEP_PHASES = ("forward", "backward", "optimiser", "running g2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--update-every", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=[v for v, _ in VARIANTS])
    parser.add_argument("--large", action="store_true", help="a ViT-L/14-shaped model with random weights")
    parser.add_argument("--crop", type=int, help="crop size (default: the demo's 112)")
    parser.add_argument("--batch", type=int, help="batch size (default: the demo's 8)")
    args = parser.parse_args()
    shape = {"large": args.large, "crop": args.crop, "batch": args.batch}
    torch.set_num_threads(args.threads)
    chosen = [(v, kw) for v, kw in VARIANTS if v in args.variants]
    print("command: python benchmarks/train_cost.py " + " ".join(sys.argv[1:]))
    device = "cuda" if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    config = demo_config("full", {}, **shape)
    model = "ViT-L/14-shaped DINOv2, random weights" if args.large else "offline DINOv2-S"
    print(f"demo setting ({model}, crop {config.data.crop}, batch {config.data.batch_size}), {device}; "
          f"{args.steps} tuning steps, a mask event every {args.update_every}; median over {args.repeats} "
          "interleaved rounds; wall clock")
    base = build_model(config)[0]
    times: dict[str, dict[str, list[float]]] = {v: defaultdict(list) for v, _ in chosen}
    for _ in range(args.repeats):
        for variant, options in chosen:
            probe = Probe(variant.split(",")[0], base=base, update_every=args.update_every, **options,
                          **shape)
            for _ in range(3):
                probe.warm_up_head_step()
            probe.prepare()
            for i in range(args.steps + 1):  # step 0 is a warm-up of the tuning phase, not counted
                probe.step(i)
            for phase, values in probe.times.items():
                skip = 1 if phase in ("warm-up step", *STEP_PHASES) else 0
                times[variant][phase].append(statistics.median(values[skip:]))
            print(f"  ran {variant}", file=sys.stderr, flush=True)

    def med(variant: str, phase: str) -> float:
        values = times[variant].get(phase)
        return statistics.median(values) if values else 0.0

    ref = chosen[0][0]
    print(f"\n1. per step, seconds (ratio to {ref})")
    print(f"{'variant':<22}{'forward':>16}{'backward':>16}{'optimiser':>16}{'running g2':>16}{'step':>16}")
    step = {}
    for variant, _ in chosen:
        parts = [med(variant, p) for p in STEP_PHASES]
        step[variant] = sum(parts)
        cells = [*parts, step[variant]]
        refs = [med(ref, p) for p in STEP_PHASES[:3]] + [step[ref], step[ref]]  # running g² / full's step
        print(f"{variant:<22}" + "".join(f"{c:>9.3f} ({c / r:.2f})" for c, r in zip(cells, refs)))

    print("\n2. one-off work, seconds per call (in steps of full fine-tuning)")
    print(f"{'variant':<22}{'prepare: estimate':>20}{'select':>16}{'event: estimate':>20}{'select':>16}")
    for variant, _ in chosen:
        cells = [med(variant, p) for p in ("prepare estimate", "prepare select", "event estimate",
                                          "event select")]
        print(f"{variant:<22}" + "".join(f"{c:>11.2f} ({c / step[ref]:4.1f})" for c in cells))

    plan = demo_plan()["recipe"]["train"]
    print(f"\n3. the demo's training ({plan['warmup_steps']} warm-up + {plan['steps']} tuning steps, "
          "modelled; mask events at each variant's own schedule)")
    print(f"{'variant':<22}{'events':>7}{'seconds':>9}{'ratio':>7}")
    total = {}
    for variant, _ in chosen:
        events = mask_events(variant, plan["steps"]) if med(variant, "event select") else 0
        per_event = med(variant, "event estimate") + med(variant, "event select")
        total[variant] = (plan["warmup_steps"] * med(variant, "warm-up step") + med(variant, "prepare total")
                          + plan["steps"] * step[variant] + events * per_event)
        print(f"{variant:<22}{events:>7}{total[variant]:>9.1f}{total[variant] / total[ref]:>7.2f}")

    steps, batches = REAL_PROTOCOL["steps"], REAL_PROTOCOL["prepare_batches"]
    print(f"\n4. a real protocol's proportions, modelled ({steps} tuning steps, estimates on {batches} "
          f"batches instead of {plan['prepare_batches']}; warm-up left out, the same for every method)")
    print(f"{'variant':<22}{'estimates':>10}{'ratio':>7}")
    scale = batches / plan["prepare_batches"]
    for variant, _ in chosen:
        events = mask_events(variant, steps) if med(variant, "event select") else 0
        per_event = med(variant, "event estimate") + med(variant, "event select")
        modelled = steps * step[variant] + scale * (med(variant, "prepare total") + events * per_event)
        print(f"{variant:<22}{events + 1:>10}{modelled / (steps * step[ref]):>7.2f}")


REAL_PROTOCOL = {"steps": 40_000, "prepare_batches": 8}
"""configs/protocols/gtav_to_cityscapes_bdd_mapillary.yaml: 40k iterations, 8 estimation batches."""


def mask_events(variant: str, steps: int) -> int:
    """Mask events (re-estimate and grow) of a run of `steps` steps at the variant's own schedule."""
    from fishertune.sparse.mask_selector import estimate_count
    from fishertune.tuners.fishertune import FisherTuneTunerConfig

    spec = variants()[variant.split(",")[0]]
    if spec["method"] != "fishertune":
        return 0
    return estimate_count(FisherTuneTunerConfig(**spec["options"]), steps) - 1


if __name__ == "__main__":
    main()
