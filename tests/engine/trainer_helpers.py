"""Tiny data and run configs for the trainer and fisher_map tests (a uniquely named module)."""

from pathlib import Path

from fishertune.cli.main import main
from fishertune.engine.config import Config, config_from_dict

TINY_BACKBONE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "patch_size": 4, "image_size": 32}


def synth_source(out: Path, n: int = 8) -> Path:
    """`n` source scenes of 32 px from the project's own generator; returns their folder."""
    assert main(["synth", "--out", str(out), "--n", str(n), "--size", "32", "--domains", "source"]) == 0
    return out / "source"


def tiny_run_config(source: Path, method: str = "fishertune", options: dict | None = None,
                    **train) -> Config:
    """A run on `source` with no evaluation: 2 head warm-up steps, 2 tuning steps, a checkpoint each."""
    return config_from_dict({
        "model": {"backbone": "dinov2", "backbone_config": dict(TINY_BACKBONE), "head": "linear"},
        "method": {"name": method, "options": options or {}},
        "data": {"train": f"folder:{source}", "batch_size": 4},
        "train": {"warmup_steps": 2, "steps": 2, "lr": 1e-3, "head_lr": 1e-2, "checkpoint_every": 1,
                  "log_every": 1, "seed": 3, "prepare_batches": 1, **train}})
