"""Tiny synthetic data and a tiny random ViT config shared by the CLI tests."""

from pathlib import Path

import pytest
import yaml

TINY_BACKBONE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                 "patch_size": 4, "image_size": 32}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """8 source, 4 source_val and 4 fog scenes of 32 px from the project's own generator."""
    from fishertune.cli.main import main

    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--n", "8", "--size", "32", "--domains", "source"]) == 0
    assert main(["synth", "--out", str(out / "eval"), "--n", "4", "--size", "32",
                 "--domains", "source_val,fog"]) == 0
    return out


def tiny_config(synth_dir: Path, **sections) -> dict:
    """A complete run config on the tiny data; `sections` update the defaults key by key."""
    config = {
        "model": {"backbone": "dinov2", "backbone_config": dict(TINY_BACKBONE), "head": "linear"},
        "method": {"name": "full"},
        "data": {"train": f"folder:{synth_dir / 'source'}",
                 "val": f"folder:{synth_dir / 'eval' / 'source_val'}",
                 "targets": [f"folder:{synth_dir / 'eval' / 'fog'}"], "batch_size": 4},
        "train": {"warmup_steps": 2, "steps": 4, "lr": 1e-3, "head_lr": 1e-2, "checkpoint_every": 2,
                  "eval_every": 3, "log_every": 1, "seed": 3, "prepare_batches": 1},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path
