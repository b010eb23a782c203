"""Tiny run configs and output checks for the CLI tests (a uniquely named module: every test folder has a
conftest; the shared fixtures are in conftest.py)."""

from pathlib import Path

import yaml

TINY_BACKBONE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "patch_size": 4, "image_size": 32}


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


def one_line(capsys, prefix: str = "error: ") -> str:
    """The single stderr line of the command, starting with `prefix` (a refused command's `error: ...`):
    no traceback, nothing else on stderr."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
