"""Tiny synthetic data shared by the CLI tests (configs: cli_helpers.py)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """8 source, 4 source_val and 4 fog scenes of 32 px from the project's own generator."""
    from fishertune.cli.main import main

    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--n", "8", "--size", "32", "--domains", "source"]) == 0
    assert main(["synth", "--out", str(out / "eval"), "--n", "4", "--size", "32",
                 "--domains", "source_val,fog"]) == 0
    return out
