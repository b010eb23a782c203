"""Tiny run configs and base files for the export tests (a uniquely named module)."""

from pathlib import Path

import torch
import yaml

from fishertune.cli.main import main

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "patch_size": 4, "image_size": 32, "mlp_ratio": 2}
METHOD_OPTIONS = {"fishertune": {"budget": 0.05}, "lora": {"rank": 2},
                  "rein": {"num_tokens": 4, "token_rank": 2}, "vpt": {"num_prompts": 2},
                  "adaptformer": {"bottleneck": 4}, "childtune": {"budget": 0.05}, "full": {}, "frozen": {}}


def write_base(path: Path, seed: int) -> Path:
    """A random tiny Dinov2Model saved as `path` (.safetensors) + config.json beside it."""
    from safetensors.torch import save_file
    from transformers import Dinov2Config, Dinov2Model

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**TINY))
    model.config.to_json_file(path.with_name("config.json"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def train_run(folder: Path, scenes: Path, method: str, weights: Path | None, sections: dict | None = None,
              data: str = "source") -> Path:
    """Train a tiny run of `method` on scenes/<data> (2 steps after a 1-step head warm-up) into folder/run;
    `sections` update the config's sections key by key."""
    config = {
        "model": {"backbone": "dinov2", "weights": None if weights is None else str(weights),
                  "backbone_config": {} if weights is not None else dict(TINY), "head": "linear"},
        "method": {"name": method, "options": METHOD_OPTIONS[method]},
        "data": {"train": f"folder:{scenes / data}", "targets": [f"folder:{scenes / 'fog'}"],
                 "batch_size": 4},
        "train": {"warmup_steps": 1, "steps": 2, "lr": 1e-2, "head_lr": 1e-2, "seed": 1, "prepare_batches": 1,
                  "log_every": 1},
    }
    for section, values in (sections or {}).items():
        config[section].update(values)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    run = folder / "run"
    assert main(["train", str(folder / "config.yaml"), "--out", str(run), "--no-progress"]) == 0
    return run
