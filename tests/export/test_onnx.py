"""`fishertune export RUN --onnx FILE` for every method whose modules export: the graph (dynamic height and
width) agrees with PyTorch on inputs of sizes it was not traced at; LoRA is merged into the weights."""

import re

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from export_helpers import train_run

import fishertune
from fishertune.cli.main import main
from fishertune.engine.onnx_export import TOLERANCE

METHODS = ["frozen", "full", "fishertune", "childtune", "lora", "rein", "vpt", "adaptformer"]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_onnx_round_trip(method, scenes, base_file, tmp_path, capsys):
    run = train_run(tmp_path, scenes, method, base_file)
    capsys.readouterr()
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(run), "--onnx", str(onnx_file)]) == 0
    printed = [float(d) for d in re.findall(r"max abs logit difference (\S+),", capsys.readouterr().out)]
    assert len(printed) == 5 and max(printed) <= TOLERANCE

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    model = fishertune.load_pretrained(run)
    generator = torch.Generator().manual_seed(7)
    # sizes the export neither traced nor checked, multiples of the patch size (4) or not: as predict does
    for shape in [(1, 3, 36, 52), (3, 3, 16, 16), (1, 3, 37, 30), (2, 3, 23, 41), (1, 3, 150, 120)]:
        images = torch.rand(*shape, generator=generator)
        expected = model.logits(images).numpy()
        got = session.run(None, {"images": images.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999
    names = [init.name for init in onnx.load(str(onnx_file)).graph.initializer]
    assert not any("lora_" in name for name in names)  # merged, not carried as adapters


def test_the_graph_carries_what_a_consumer_needs(scenes, base_file, tmp_path):
    import json

    run = train_run(tmp_path, scenes, "fishertune", base_file)
    assert main(["export", str(run), "--onnx", str(tmp_path / "model.onnx")]) == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(meta["fishertune.classes"])[:3] == ["road", "sidewalk", "building"]
    assert json.loads(meta["fishertune.palette"])[0] == [128, 64, 128]  # Cityscapes' road
    assert meta["fishertune.patch_size"] == "4" and meta["fishertune.method"] == "fishertune"
    assert len(meta["fishertune.base_sha256"]) == 64
    assert len(json.loads(meta["fishertune.mean"])) == 3


def test_an_export_folder_exports_too(scenes, base_file, tmp_path):
    run = train_run(tmp_path, scenes, "fishertune", base_file)
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    assert main(["export", str(tmp_path / "export"), "--onnx", str(tmp_path / "model.onnx")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    images = torch.rand(1, 3, 24, 28, generator=torch.Generator().manual_seed(1))
    expected = fishertune.load_pretrained(run).logits(images).numpy()
    assert np.abs(session.run(None, {"images": images.numpy()})[0] - expected).max() <= TOLERANCE


def test_rein_with_linked_queries_says_why_it_cannot_export(scenes, base_file, tmp_path, capsys):
    from fishertune.models.heads.base import tiny_head_config

    run = train_run(tmp_path, scenes, "rein", base_file, {
        "model": {"head": "mask2former", "head_options": tiny_head_config("mask2former")},
        "method": {"options": {"num_tokens": 4, "token_rank": 2, "link_queries": True}}})
    capsys.readouterr()
    assert main(["export", str(run), "--onnx", str(tmp_path / "model.onnx")]) == 2
    assert "link_queries cannot be exported to ONNX" in capsys.readouterr().err
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("family", ["dinov2_reg", "mae", "sam"])
def test_a_backbone_that_cannot_be_one_graph_is_refused_in_one_line(family, scenes, tmp_path, capsys):
    from fishertune.models.backbones import tiny_backbone_config

    run = train_run(tmp_path, scenes, "full", None, {
        "model": {"backbone": family, "backbone_config": tiny_backbone_config(family)}})
    capsys.readouterr()
    for out in ([], ["--out", str(tmp_path / "export")]):  # with --out, the folder is not written either
        assert main(["export", str(run), "--onnx", str(tmp_path / "model.onnx"), *out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"a {family} backbone cannot be exported to ONNX" in err[0]
        assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "export").exists()


@pytest.mark.parametrize("problem", ["onnx_is_a_folder", "not_onnx_suffix", "onnxruntime_missing"])
def test_export_out_and_onnx_checks_the_onnx_side_before_writing_anything(problem, scenes, base_file,
                                                                            tmp_path, monkeypatch, capsys):
    import builtins

    run = train_run(tmp_path, scenes, "fishertune", base_file)
    onnx_path = tmp_path / "model.onnx"
    if problem == "onnx_is_a_folder":
        onnx_path.mkdir()
    elif problem == "not_onnx_suffix":
        onnx_path = tmp_path / "model.bin"
    else:
        real_import = builtins.__import__

        def no_onnxruntime(name, *args, **kwargs):
            if name == "onnxruntime":
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "ex"), "--onnx", str(onnx_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "ex").exists()  # the rerun is not refused for an --out left behind
