"""Print the README table of methods: source paper, config name and trainable backbone parameters on
DINOv2 ViT-S/14 (384 wide, 12 blocks, 6 heads) and ViT-L/14 (1024, 24, 16) at 518 px, with default options.

Counts come from each tuner's `count_trainable` (shapes and budget only). On ViT-S every tuner is also
built on random weights and its reported `num_trainable` is checked against that count; ViT-L is built on
the meta device (shapes without memory).

    .venv/bin/python benchmarks/trainable_params.py
"""

from __future__ import annotations

import dataclasses

import torch

from fishertune.models import build_segmentor
from fishertune.tuners import TUNERS, build_tuner
from fishertune.tuners.budget import count_trainable

VITS = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14, image_size=518)
VITL = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14, image_size=518)
ORDER = ["frozen", "full", "lora", "vpt", "adaptformer", "rein", "random", "childtune", "fish", "fishertune"]


def segmentor(config: dict):
    return build_segmentor({"name": "dinov2", "config": config}, "linear")


def defaults(method: str) -> str:
    config = TUNERS[method].config_class()
    shown = ("budget", "ratio", "layer_decay", "rank", "alpha", "target_mlp", "num_prompts", "bottleneck",
             "scale", "num_tokens", "token_rank")
    items = [f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
             if f.name in shown and getattr(config, f.name) is not None]
    return ", ".join(items) or "—"


def main() -> None:
    torch.manual_seed(0)
    small = segmentor(VITS)
    with torch.device("meta"):
        large = segmentor(VITL)
    totals = [sum(p.numel() for p in m.backbone.parameters()) for m in (small, large)]
    print(f"Backbone parameters: ViT-S {totals[0]:,}, ViT-L {totals[1]:,} (DINOv2, 518 px position grid)\n")
    print("| method | config name | source | defaults | ViT-S trainable | ViT-L trainable |")
    print("|---|---|---|---|---|---|")
    for method in [m for m in ORDER if m in TUNERS] + sorted(set(TUNERS) - set(ORDER)):
        counts = [count_trainable(method, m) for m in (small, large)]
        built = build_tuner(method, segmentor(VITS)).num_trainable()
        assert built == counts[0], f"{method}: built {built:,} != counted {counts[0]:,}"
        cells = [f"{c:,} ({100 * c / t:.2f}%)" for c, t in zip(counts, totals)]
        paper = TUNERS[method].paper
        print(f"| {method} | `{method}` | {paper} | {defaults(method)} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
