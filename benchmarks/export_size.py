"""Print the table of export sizes (docs/performance.md, docs/export.md): `fishertune export` folder /
full model.safetensors, per method.

"change only" is the method's own file(s) under tuner/ (FisherTune's sparse delta, the adapters' weights)
without the head, config and model card.

ViT-S is measured: each method fine-tunes the offline DINOv2 ViT-S/14 (linear head, 19 classes) for one
step on a few synthetic scenes, is exported, and the files are weighed. ViT-L (1024 wide, 24 blocks) is
computed from the methods' trainable counts with the same byte costs, which the script checks on ViT-S
(predicted within 1% + 20 kB of the measured size): a sparse delta entry costs 8 bytes (int32 index +
float32 value), an adapter weight 4 bytes, the head 4 bytes a parameter, plus the JSON, YAML and README.

    .venv/bin/python benchmarks/export_size.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import yaml

from fishertune.cli.main import main as cli
from fishertune.engine.config import load_config
from fishertune.models import build_segmentor
from fishertune.tuners.budget import count_trainable

VITL = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14, image_size=518)
METHODS = {"fishertune": {"budget": 0.05}, "lora": {}, "rein": {}, "vpt": {}, "adaptformer": {}, "full": {},
           "frozen": {}}
SPARSE = {"fishertune", "childtune", "fish", "random"}


def bytes_per_entry(method: str) -> int:
    return 8 if method in SPARSE else 4


def small_head(model) -> int:
    return sum(p.numel() for p in model.head.parameters())


def measure(root: Path, method: str, options: dict) -> dict:
    config = {"base": ["backbones/dinov2_s_offline.yaml", f"methods/{method}.yaml"],
              "method": {"name": method, "options": options} if options else {"name": method},
              "data": {"train": f"folder:{root / 'data' / 'source'}", "batch_size": 2},
              "train": {"warmup_steps": 0, "steps": 1, "prepare_batches": 1, "log_every": 1}}
    path = root / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config))
    run, export = root / f"run_{method}", root / f"export_{method}"
    assert cli(["train", str(path), "--out", str(run), "--no-progress"]) == 0
    assert cli(["export", str(run), "--out", str(export)]) == 0
    files = {str(p.relative_to(export)): p.stat().st_size for p in export.rglob("*") if p.is_file()}
    change = sum(size for name, size in files.items()
                 if name.startswith("tuner/") and name.endswith(".safetensors"))
    return {"export": sum(files.values()), "change": change, "head": files["head.safetensors"],
            "model": (run / "model.safetensors").stat().st_size,
            "options": load_config(run / "config.yaml").method.options}


def main() -> None:
    torch.manual_seed(0)
    with torch.device("meta"):
        large = build_segmentor({"name": "dinov2", "config": VITL}, "linear")
    large_backbone = sum(p.numel() for p in large.backbone.parameters())
    large_head = sum(p.numel() for p in large.head.parameters())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        assert cli(["synth", "--out", str(root / "data"), "--n", "4", "--size", "56",
                    "--domains", "source"]) == 0
        small_model = build_segmentor({"name": "dinov2_s_offline", "out_indices": [3, 5, 7, 11]}, "linear")
        for method, options in METHODS.items():
            small = measure(root, method, options)
            small_count = count_trainable(method, small_model, **small["options"])
            overhead = small["export"] - small["change"]  # head, JSON, YAML, README
            predicted = small_count * bytes_per_entry(method) + overhead
            assert abs(predicted - small["export"]) <= 0.01 * small["export"] + 2e4, (method, predicted)
            large_head_bytes = overhead + 4 * (large_head - small_head(small_model))
            large_export = count_trainable(method, large, **small["options"]) * bytes_per_entry(method) \
                + large_head_bytes
            rows.append((method, small, large_export, 4 * (large_backbone + large_head)))
    print("| method | options | ViT-S export | ViT-S full model | ViT-S ratio | ViT-S change only | "
          "ViT-L export (computed) | ViT-L full model | ViT-L ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, small, large_export, large_model in rows:
        options = ", ".join(f"{k}={v}" for k, v in small["options"].items()) or "—"
        print(f"| {method} | {options} | {small['export'] / 1e6:.2f} MB | {small['model'] / 1e6:.1f} MB | "
              f"{100 * small['export'] / small['model']:.1f}% | "
              f"{100 * small['change'] / small['model']:.1f}% | {large_export / 1e6:.1f} MB | "
              f"{large_model / 1e6:.0f} MB | {100 * large_export / large_model:.1f}% |")


if __name__ == "__main__":
    main()
