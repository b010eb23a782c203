"""Seconds per image of each decode head on the offline DINOv2-S, at 224 and 512 px, on CPU.

forward: `Segmentor.forward` in eval mode without gradients (inference, one pass);
fwd+bwd: `Segmentor.loss` + backward in train mode with every parameter trainable (full fine-tuning).
Median of `--reps` timed repetitions after one warm-up, 2 threads, seeded inputs. Run alone: parallel jobs
on a 2-core machine distort every timing.

    python benchmarks/model_speed.py [--reps 2] [--sizes 224 512] [--heads linear multilevel mask2former]
    python benchmarks/model_speed.py --windows [--window-image 336 672] [--crop 224] [--window-batch 8]

--windows instead measures sliding-window inference (`Segmentor.predict(mode="slide")`) of one image
(batch 1, as the GTAV protocol evaluates): windows per second one window per pass (before
`eval.window_batch`) against --window-batch windows per pass, interleaved, and with flip TTA; the
scores are checked equal within float tolerance.
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


def windows(args) -> None:
    """Windows per second of sliding-window inference, one window per pass against batched windows."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_segmentor("dinov2_s_offline", args.heads[0]).eval().to(device)
    image = torch.rand(1, 3, *args.window_image, generator=torch.Generator().manual_seed(0)).to(device)
    stride = 2 * args.crop // 3
    runs = {"1 window per pass (before)": dict(window_batch=1),
            f"{args.window_batch} windows per pass": dict(window_batch=args.window_batch),
            f"{args.window_batch} per pass + flip TTA": dict(window_batch=args.window_batch, flip=True)}
    outputs = {k: model.predict(image, mode="slide", crop=args.crop, stride=stride, **kw)
               for k, kw in runs.items()}
    first, second = list(outputs.values())[:2]
    difference = float((first - second).abs().max())
    assert torch.allclose(first, second, rtol=1e-4, atol=1e-4), difference
    height, width = args.window_image
    count = (-(-(height - args.crop) // stride) + 1) * (-(-(width - args.crop) // stride) + 1)
    times = {k: [] for k in runs}
    for _ in range(args.reps):  # interleaved
        for k, kw in runs.items():
            start = time.perf_counter()
            model.predict(image, mode="slide", crop=args.crop, stride=stride, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - start)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"offline DINOv2-S/14 + {args.heads[0]}, {where}; one {height}x{width} image, "
          f"{count} windows of {args.crop} px (stride {stride}); median of {args.reps} interleaved reps; "
          f"max |difference| of the scores {difference:.1e}")
    rates = {k: count * (2 if "flip" in k else 1) / statistics.median(v)  # flip computes twice the windows
             for k, v in times.items()}
    base = rates["1 window per pass (before)"]
    print(f"{'inference':<30}{'windows/s':>10}{'ratio':>7}")
    for k, rate in rates.items():
        print(f"{k:<30}{rate:>10.2f}{rate / base:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--heads", nargs="+", default=["linear", "multilevel", "mask2former"])
    parser.add_argument("--windows", action="store_true", help="measure sliding-window inference instead")
    parser.add_argument("--window-image", type=int, nargs=2, default=[336, 672])
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--window-batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.windows:
        windows(args)
        return
    print(f"offline DINOv2-S/14, CPU, {args.threads} threads, median of {args.reps} reps; seconds per image")
    print(f"{'head':<12} {'px':>4} {'batch':>5} {'forward':>9} {'fwd+bwd':>9}")
    for size in args.sizes:
        batch = 2 if size <= 224 else 1
        for head in args.heads:
            fwd, both = measure(head, size, batch, args.reps)
            print(f"{head:<12} {size:>4} {batch:>5} {fwd:>9.3f} {both:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
