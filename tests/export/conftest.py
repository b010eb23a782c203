"""Tiny data, a tiny base-backbone file and a trainer for the export tests (helpers: export_helpers.py)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> Path:
    """8 source and 4 fog scenes of 32 px from the project's generator."""
    from fishertune.cli.main import main

    out = tmp_path_factory.mktemp("scenes")
    assert main(["synth", "--out", str(out), "--n", "8", "--size", "32", "--domains", "source"]) == 0
    assert main(["synth", "--out", str(out), "--n", "4", "--size", "32", "--domains", "fog",
                 "--overwrite"]) == 0  # adds fog/ beside source/ (synth.json is rewritten)
    return out


@pytest.fixture(scope="session")
def base_file(tmp_path_factory) -> Path:
    """A tiny random DINOv2 as a .safetensors file with its config.json: the base the runs fine-tune."""
    from export_helpers import write_base

    return write_base(tmp_path_factory.mktemp("base") / "tiny_dinov2.safetensors", seed=0)
