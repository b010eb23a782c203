"""Cost of FisherTune's pieces on a small ViT, as ratios of the plain operations they replace.

Prints, for a transformers Dinov2Model (random init; ViT-S width, few layers) with a linear head:
- exact (vmap and loop) and cheap Fisher time per sample / one plain forward+backward per sample
  (the per-sample share of a batched training step on the same batch);
- DR-FIM estimation (MaskSelector.estimate) / its minimum: on the plain Fisher, 2 exact Fisher passes
  (clean + perturbed, vmap backend); on the IVON estimate, 2 streams × samples antithetic pairs × 2 plain
  forward+backward passes (batch gradients at m ± σξ). Beyond them it makes one no-grad forward pass per
  batch to record the perturbation's batch statistics, and IVON draws and applies the weight noise;
- MaskedAdamW step time and state bytes / torch.optim.AdamW on the full model, at 1% and 5% selection
  of the backbone (the head stays dense in both).

    python benchmarks/fisher_cost.py [--layers 2] [--image 56] [--batch 4] [--threads 1] [--clock cpu]

Times are this process's CPU seconds by default (--clock cpu), so that other jobs on a shared machine do
not distort the ratios; --clock wall measures elapsed time.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Dinov2Config, Dinov2Model

from fishertune import MaskedAdamW, MaskSelector, MaskSelectorConfig, empirical_fisher, select_topk


class Classifier(nn.Module):
    def __init__(self, args):
        super().__init__()
        config = Dinov2Config(hidden_size=args.width, num_hidden_layers=args.layers,
                              num_attention_heads=args.heads, intermediate_size=4 * args.width, patch_size=14,
                              image_size=args.image, attn_implementation=args.attn)
        self.backbone = Dinov2Model(config)
        self.head = nn.Linear(args.width, 10)

    def forward(self, x):
        return self.head(self.backbone(pixel_values=x).pooler_output)


def loss_fn(model, batch):
    return F.cross_entropy(model(batch["x"]), batch["y"], reduction="none")


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def timed(fn, repeats, clock, warmup=True):
    if warmup:
        fn()  # first-call overheads
    start = clock()
    for _ in range(repeats):
        fn()
    return (clock() - start) / repeats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--image", type=int, default=56)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    parser.add_argument("--var-samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", default="cpu", choices=sorted(CLOCKS),
                        help="cpu: this process's CPU seconds (steady on a shared machine); wall: elapsed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    clock = CLOCKS[args.clock]
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = Classifier(args).eval()
    g = torch.Generator().manual_seed(args.seed)
    batches = [{"x": torch.randn(args.batch, 3, args.image, args.image, generator=g),
                "y": torch.randint(0, 10, (args.batch,), generator=g)} for _ in range(args.batches)]
    samples = args.batch * args.batches
    backbone = [n for n, _ in model.named_parameters() if n.startswith("backbone.")]
    n_backbone = sum(p.numel() for n, p in model.named_parameters() if n in backbone)
    print("command:", "python benchmarks/fisher_cost.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"model: Dinov2Model width {args.width}, {args.layers} layers, {args.image}px "
          f"({(args.image // 14) ** 2 + 1} tokens), {n_backbone:,} backbone params; "
          f"{args.batches} batches of {args.batch}, {args.threads} threads, attention {args.attn}, "
          f"{args.clock} clock")

    def plain_step():
        for batch in batches:
            model.zero_grad()
            loss_fn(model, batch).mean().backward()

    base = timed(plain_step, 3, clock) / samples
    rows = [("plain forward+backward", base)]
    fisher_time = {}
    for label, kwargs in [("exact Fisher, vmap", dict(backend="vmap")),
                          ("exact Fisher, loop", dict(backend="loop")),
                          ("cheap Fisher (batch)", dict(per_sample=False))]:
        estimate = lambda kw=kwargs: empirical_fisher(model, batches, loss_fn, params=backbone, **kw)  # noqa: E731
        fisher_time[label] = timed(estimate, 3, clock)
        rows.append((label, fisher_time[label] / samples))
    print(f"\n{'Fisher':<28}{'s/sample':>10}{'ratio':>8}")
    for label, t in rows:
        print(f"{label:<28}{t:>10.4f}{t / base:>8.2f}")

    one_pass = fisher_time["exact Fisher, vmap"]  # estimate() uses the same (vmap) backend for F and F'
    plain_pass = base * samples  # one plain forward+backward over every batch
    print(f"\n{'DR-FIM estimate':<34}{'seconds':>8}{'minimum':>30}{'ratio':>8}")
    for variational in ("off", "ivon"):
        config = MaskSelectorConfig(ratio=0.05, include=["backbone.*"], variational=variational,
                                    perturb_layers=["backbone.encoder.layer.0"],
                                    var_samples=args.var_samples, seed=args.seed)
        tuner = MaskSelector(model, config)
        t = timed(lambda tuner=tuner: tuner.estimate(batches, loss_fn), 2, clock)
        if variational == "off":  # the clean and the perturbed exact Fisher
            label, minimum, unit = "plain Fisher (clean + perturbed)", 2 * one_pass, "2 exact Fisher passes"
        else:  # clean and perturbed streams, each var_samples antithetic pairs of batch gradients
            passes = 2 * 2 * args.var_samples
            label, minimum = f"IVON, {args.var_samples} pairs", passes * plain_pass
            unit = f"{passes} plain passes"
        print(f"{label:<34}{t:>8.2f}{unit:>30}{t / minimum:>8.2f}")

    print(f"\n{'optimiser':<26}{'step ms':>9}{'ratio':>8}{'state MB':>10}{'ratio':>8}")
    g = torch.Generator().manual_seed(args.seed + 1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dense_t = timed(adamw.step, 10, clock)
    dense_bytes = sum(v.numel() * v.element_size() for s in adamw.state.values() for v in s.values())
    print(f"{'AdamW, full model':<26}{1e3 * dense_t:>9.2f}{1.0:>8.2f}{dense_bytes / 2**20:>10.2f}{1.0:>8.2f}")
    scores = {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters() if n in backbone}
    for ratio in (0.01, 0.05):
        masked = MaskedAdamW(model.named_parameters(), select_topk(scores, ratio=ratio), lr=1e-4)
        t = timed(masked.step, 10, clock)
        size = masked.state_bytes()
        print(f"{f'MaskedAdamW, {ratio:.0%} selected':<26}{1e3 * t:>9.2f}{t / dense_t:>8.2f}"
              f"{size / 2**20:>10.2f}{size / dense_bytes:>8.2f}")


if __name__ == "__main__":
    main()
