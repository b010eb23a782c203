"""The CUDA paths, checked on the GPU (run by scripts/gpu_check.sh; not part of the test suite).

On a ViT-L/14-shaped DINOv2 with random weights (or --small: the tiny test model), batch 2 at --crop px:
1. `train.amp` bf16 and fp16 (with GradScaler): the forward runs in the reduced dtype, the loss is
   finite, and the gradients agree with float32 (relative difference printed, must be < 5%);
2. activation checkpointing: the same gradients as without it (float tolerance), and its peak memory
   and time as ratios to without;
3. the model enters no autocast by itself: a float32 forward on CUDA stays float32.
Exits non-zero (one `error:` line) when any check fails.

    python benchmarks/cuda_paths.py [--crop 512] [--small]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from fishertune.engine.build import build_model
from fishertune.engine.precision import autocast, grad_scaler
from training_probe import demo_config


def gradients(model, images, labels, amp="off", checkpointing=False):
    """(gradients, peak MiB, seconds) of one loss.backward() under `amp`."""
    model.zero_grad(set_to_none=True)
    model.backbone.activation_checkpointing = checkpointing
    scaler = grad_scaler(images.device, amp)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with autocast(images.device, amp):
        loss = model.loss(images, labels).float()
    if not torch.isfinite(loss):
        sys.exit(f"error: loss is {loss.item()} under amp {amp}")
    scaler.scale(loss).backward()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
    grads = {n: p.grad.float() / scale for n, p in model.named_parameters() if p.grad is not None}
    return grads, torch.cuda.max_memory_allocated() / 2**20, seconds


def relative(a: dict, b: dict) -> float:
    """‖a − b‖ / ‖b‖ over all gradients."""
    difference = torch.stack([(a[n] - b[n]).norm() for n in a]).norm()
    return float(difference / torch.stack([b[n].norm() for n in b]).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--small", action="store_true", help="the offline DINOv2-S instead of ViT-L")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device (torch.cuda.is_available() is false)")
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(demo_config("full", {}, large=not args.small, crop=args.crop, batch=2))[0].to(device)
    model.train()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, args.crop, args.crop, generator=g).to(device)
    labels = torch.randint(0, 19, (2, args.crop, args.crop), generator=g).to(device)
    print(f"{torch.cuda.get_device_name()}; {'DINOv2-S' if args.small else 'ViT-L/14-shaped'}, batch 2, "
          f"{args.crop} px")

    dtypes = []
    hook = model.backbone.blocks[0].register_forward_hook(lambda m, a, out: dtypes.append(
        (out[0] if isinstance(out, tuple) else out).dtype))
    reference, peak32, time32 = gradients(model, images, labels)
    if dtypes[-1] != torch.float32:
        sys.exit(f"error: the model ran in {dtypes[-1]} without autocast (it must not choose a precision)")
    print(f"float32: peak {peak32:.0f} MiB, {time32:.3f} s; blocks run in {dtypes[-1]}")
    for amp, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        grads, peak, seconds = gradients(model, images, labels, amp)
        difference = relative(grads, reference)
        print(f"{amp}: blocks in {dtypes[-1]}, gradient difference to float32 {difference:.3%}, "
              f"peak {peak / peak32:.2f}x, time {seconds / time32:.2f}x")
        if dtypes[-1] != dtype or difference > 0.05:
            sys.exit(f"error: {amp} autocast check failed")
    hook.remove()
    for amp in ("off", "bf16"):
        plain, peak, seconds = gradients(model, images, labels, amp)
        checkpointed, peak_ck, seconds_ck = gradients(model, images, labels, amp, checkpointing=True)
        difference = relative(checkpointed, plain)
        print(f"activation checkpointing ({amp}): gradient difference {difference:.1e}, peak memory "
              f"{peak_ck / peak:.2f}x, time {seconds_ck / seconds:.2f}x")
        if difference > (1e-5 if amp == "off" else 2e-2):
            sys.exit(f"error: activation checkpointing changed the gradients ({amp})")
    print("CUDA paths: all checks passed")


if __name__ == "__main__":
    main()
