"""Atomic writes: a failed write leaves the old file and no temporary behind; files get normal modes."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from fishertune.atomic import save_tensors, write_atomic, write_json, write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text(tmp_path / "results.json", "old")

    def half_write(temp):
        with open(temp, "w") as f:
            f.write("half")
        raise KeyboardInterrupt  # as if the run were killed mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_write)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]


def test_files_round_trip_with_the_usual_permissions(tmp_path):
    write_json(tmp_path / "a" / "r.json", {"x": 1})
    assert (tmp_path / "a" / "r.json").read_text() == '{\n  "x": 1\n}\n'
    t = torch.arange(6.0).view(2, 3).t()  # non-contiguous
    save_tensors(tmp_path / "w.safetensors", {"t": t}, metadata={"k": "v"})
    assert torch.equal(load_file(tmp_path / "w.safetensors")["t"], t)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_one_tensor_under_two_names_is_written_twice(tmp_path):
    fisher = torch.arange(6.0).view(2, 3)
    flat = torch.arange(4.0)
    tensors = {"score": fisher, "fisher": fisher, "a": flat[:2], "b": flat[2:]}
    save_tensors(tmp_path / "t.safetensors", tensors)
    loaded = load_file(tmp_path / "t.safetensors")
    assert torch.equal(loaded["score"], fisher) and torch.equal(loaded["fisher"], fisher)
    assert loaded["a"].tolist() == [0.0, 1.0] and loaded["b"].tolist() == [2.0, 3.0]


def test_json_holds_no_nan(tmp_path):
    path = write_json(tmp_path / "a.json", {"r": float("nan"), "x": [1.5, float("inf")], "n": (2, None)})
    assert json.loads(path.read_text()) == {"r": None, "x": [1.5, None], "n": [2, None]}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
