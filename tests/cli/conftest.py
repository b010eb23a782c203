"""Tiny synthetic data and a finished run shared by the CLI tests (configs and checks: cli_helpers.py)."""

from pathlib import Path

import pytest
from cli_helpers import tiny_config, write_config


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """8 source, 4 source_val and 4 fog scenes of 32 px from the project's own generator."""
    from fishertune.cli.main import main

    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--n", "8", "--size", "32", "--domains", "source"]) == 0
    assert main(["synth", "--out", str(out / "eval"), "--n", "4", "--size", "32",
                 "--domains", "source_val,fog"]) == 0
    return out


@pytest.fixture(scope="session")
def finished_run(synth_dir, tmp_path_factory) -> Path:
    """A finished run (warm-up 1 step, 2 steps, its one checkpoint at step 3) that tests only read: copy it
    (test_hostile.py's `run_copy`) before damaging it."""
    from fishertune.cli.main import main

    folder = tmp_path_factory.mktemp("finished")
    config = tiny_config(synth_dir, train={"warmup_steps": 1, "steps": 2, "checkpoint_every": 0,
                                           "eval_every": 0})
    run = folder / "run"
    assert main(["train", str(write_config(folder / "c.yaml", config)), "--out", str(run),
                 "--no-progress"]) == 0
    return run
