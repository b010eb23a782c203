"""Peak memory of each method's training as a ratio to full fine-tuning's, on the demo setting.

Each variant runs in its own process (a peak cannot be reset within one): build the segmentor, 1 head
warm-up step, the tuner's prepare (Fisher estimation + selection), then --steps tuning steps with a mask
event every --update-every steps (see training_probe.py). Reported: the process's peak resident memory
(CPU: ru_maxrss), the resident memory once the model is built, and the peak above it (what training adds:
activations, gradients, optimiser state, Fisher buffers); on CUDA the peak allocated GPU memory
(torch.cuda.max_memory_allocated) instead. Ratios are to full fine-tuning without checkpointing.

glibc keeps freed blocks under its (adaptive) mmap threshold in the heap, so a CPU peak also holds memory
that an earlier phase freed. `--mmap-threshold BYTES` fixes the threshold in every worker
(MALLOC_MMAP_THRESHOLD_): allocations of that size or more are mapped and returned when freed, so the
peak follows the live tensors more closely, as CUDA's max allocated does.

    python benchmarks/train_memory.py [--steps 2] [--update-every 2] [--threads 2] [--mmap-threshold 131072]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

VARIANTS = [("full", {}), ("full, checkpointing", {"checkpointing": True}), ("lora", {}), ("random", {}),
            ("random, checkpointing", {"checkpointing": True}), ("fim", {}),
            ("fim, vmap", {"backend": "vmap"}), ("drfim", {}), ("drfim, vmap", {"backend": "vmap"}),
            ("fishertune", {}), *[(f"fishertune, chunk_size {c}", {"chunk_size": c}) for c in (8, 4, 2, 1)],
            ("fishertune, vmap", {"backend": "vmap"}), ("fishertune, reestimate off", {"reestimate": "off"}),
            ("fishertune, checkpointing", {"checkpointing": True}), ("fishertune-row", {})]


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(variant: str, steps: int, update_every: int, threads: int, shape: dict) -> dict:
    from training_probe import Probe

    torch.set_num_threads(threads)
    options = dict(VARIANTS)[variant]
    probe = Probe(variant.split(",")[0], update_every=update_every, **options, **shape)
    built = rss_mb()
    if probe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        built = torch.cuda.memory_allocated() / 2**20
    probe.warm_up_head_step()
    probe.prepare()
    for i in range(steps):
        probe.step(i)
    if probe.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"built": built, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--update-every", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=[v for v, _ in VARIANTS])
    parser.add_argument("--large", action="store_true", help="a ViT-L/14-shaped model with random weights")
    parser.add_argument("--crop", type=int, help="crop size (default: the demo's 112)")
    parser.add_argument("--batch", type=int, help="batch size (default: the demo's 8)")
    parser.add_argument("--mmap-threshold", type=int, help="glibc's mmap threshold in bytes, fixed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = {"large": args.large, "crop": args.crop, "batch": args.batch}
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.update_every, args.threads, shape)))
        return
    kind = "CUDA max allocated" if torch.cuda.is_available() else "CPU peak RSS"
    print("command: python benchmarks/train_memory.py " + " ".join(sys.argv[1:]))
    model = "ViT-L/14-shaped DINOv2, random weights" if args.large else "offline DINOv2-S"
    fixed = args.mmap_threshold
    allocator = "" if fixed is None else f" (glibc mmap threshold fixed at {fixed} B)"
    print(f"demo setting ({model}, crop {args.crop or 112}, batch {args.batch or 8}); {kind}{allocator}; "
          f"{args.steps} tuning steps, a mask event every {args.update_every}; one process per variant")
    env = dict(os.environ)
    if fixed is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(fixed)
    results = {}
    for variant in args.variants:
        command = [sys.executable, __file__, "--worker", variant, "--steps", str(args.steps),
                   "--update-every", str(args.update_every), "--threads", str(args.threads),
                   *(["--large"] if args.large else []), *(["--crop", str(args.crop)] if args.crop else []),
                   *(["--batch", str(args.batch)] if args.batch else [])]
        done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent,
                              env=env)
        if done.returncode:
            sys.exit(f"error: {variant} failed: {done.stderr.strip().splitlines()[-1]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    ref = results[args.variants[0]]
    print(f"\n{'variant':<28}{'model MB':>10}{'peak MB':>10}{'ratio':>7}{'peak - model MB':>17}{'ratio':>7}")
    for variant, r in results.items():
        added, ref_added = r["peak"] - r["built"], ref["peak"] - ref["built"]
        print(f"{variant:<28}{r['built']:>10.0f}{r['peak']:>10.0f}{r['peak'] / ref['peak']:>7.2f}"
              f"{added:>17.0f}{added / ref_added:>7.2f}")


if __name__ == "__main__":
    main()
