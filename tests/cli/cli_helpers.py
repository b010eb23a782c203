"""Tiny run configs and output checks for the CLI tests (a uniquely named module: every test folder has a
conftest; the shared fixtures are in conftest.py)."""

from pathlib import Path

import yaml

from fishertune.cli.main import main
from fishertune.errors import EXIT_BAD_INPUT

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


def changed_config(synth_dir: Path, change: dict) -> dict:
    """The tiny config with `change` ({section: {key: value}}) applied: a mapping the config already holds
    at that key (model.backbone_config) is updated key by key, anything else is set."""
    config = tiny_config(synth_dir)
    for section, values in change.items():
        target = config.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key].update(value)
            else:
                target[key] = value
    return config


def refused_before_training(config: dict, tmp_path: Path, capsys) -> str:
    """`fishertune train` on `config` exits with the bad-input status before creating the run folder; its
    one error line."""
    run = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out", str(run),
                 "--no-progress"]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert not run.exists()
    return line


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
