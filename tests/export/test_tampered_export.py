"""A damaged or tampered export is refused on load, by `eval`/`predict` and `load_pretrained` alike, in one
line naming the file and the problem (issue 25): never a traceback, never a silently wrong result. Each case
damages a copy of a tiny LoRA (adapter weights) or FisherTune (sparse delta) export."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from export_helpers import train_run
from safetensors.torch import load_file, save_file

import fishertune
from fishertune.cli.main import main
from fishertune.errors import EXIT_BAD_INPUT, FisherTuneError


@pytest.fixture(scope="module")
def exports(scenes, base_file, tmp_path_factory) -> dict[str, Path]:
    """{method: export folder} of tiny lora and fishertune runs fine-tuned from the base file."""
    folders = {}
    for method in ("lora", "fishertune"):
        folder = tmp_path_factory.mktemp(method)
        run = train_run(folder, scenes, method, base_file)
        assert main(["export", str(run), "--out", str(folder / "export")]) == 0
        folders[method] = folder / "export"
    return folders


def edit_tensors(name: str, change):
    """A damage to the safetensors file `name` of the export: `change(tensors)` edits the dict in place."""
    def damage(export: Path) -> None:
        tensors = {k: v.clone() for k, v in load_file(str(export / name)).items()}
        change(tensors, sorted(tensors)[0])
        save_file(tensors, str(export / name))
    return damage


def edit_delta(suffix: str, change):
    """A damage to the first delta tensor whose name ends with `suffix`, the delta's metadata kept."""
    def damage(export: Path) -> None:
        from safetensors import safe_open

        path = export / "tuner" / "delta.safetensors"
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        tensors = load_file(str(path))
        name = next(k for k in sorted(tensors) if k.endswith(suffix))
        tensors[name] = change(tensors[name])
        save_file(tensors, str(path), metadata=metadata)
    return damage


def edit_json(name: str, change):
    def damage(export: Path) -> None:
        data = json.loads((export / name).read_text())
        change(data)
        (export / name).write_text(json.dumps(data))
    return damage


def remove(name: str):
    return lambda export: (export / name).unlink()


def empty_base(export: Path) -> None:
    config = export / "config.yaml"
    config.write_text(re.sub(r"(?m)^  weights: .*$", "  weights: ''", config.read_text(), count=1))


def head_a_folder(export: Path) -> None:
    (export / "head.safetensors").unlink()
    (export / "head.safetensors").mkdir()


def set_first(value):
    def change(tensors, first):
        tensors[first].view(-1)[0] = value
    return change


HEAD, LORA = "head.safetensors", "tuner/tuner_weights.safetensors"
TAMPERED = {  # case: (export, damage, the file named, what the line says)
    "head_missing": ("lora", remove(HEAD), HEAD, "is missing"),
    "head_a_folder": ("lora", head_a_folder, HEAD, "is not a file"),
    "head_truncated": ("lora", lambda e: (e / HEAD).write_bytes((e / HEAD).read_bytes()[:40]), HEAD,
                       "cannot read decode head"),
    "head_tensor_missing": ("lora", edit_tensors(HEAD, lambda t, k: t.pop(k)), HEAD, "lacks the tensor"),
    "head_tensor_extra": ("lora", edit_tensors(HEAD, lambda t, k: t.update(extra=torch.zeros(2))), HEAD,
                          "unexpected tensor 'extra'"),
    "head_wrong_shape": ("lora", edit_tensors(HEAD, lambda t, k: t.update({k: torch.zeros(3)})), HEAD,
                         "has shape [3], the model's is"),
    "head_wrong_dtype": ("lora", edit_tensors(HEAD, lambda t, k: t.update({k: t[k].double()})), HEAD,
                         "is float64, the model's is float32"),
    "head_nan": ("lora", edit_tensors(HEAD, set_first(float("nan"))), HEAD, "holds NaN or infinite values"),
    "head_inf": ("lora", edit_tensors(HEAD, set_first(float("inf"))), HEAD, "holds NaN or infinite values"),
    "manifest_without_base_sha256": ("lora", edit_json("export.json", lambda m: m.pop("base_sha256")),
                                     "export.json", "base_sha256 must be the base's weights hash"),
    "manifest_base_sha256_not_a_string": ("lora", edit_json("export.json", lambda m: m.update(base_sha256=5)),
                                          "export.json", "64 hex digits, got 5"),
    "manifest_names_another_method": ("lora", edit_json("export.json", lambda m: m.update(method="rein")),
                                      "export.json", "names the method 'rein', its config.yaml 'lora'"),
    "base_empty": ("lora", empty_base, "config.yaml", "model.weights is empty"),
    "tuner_config_names_another_method": (
        "fishertune", edit_json("tuner/tuner_config.json", lambda c: c.update(method="childtune")),
        "tuner_config.json", "names the method 'childtune', but the run's config names 'fishertune'"),
    "lora_weights_missing": ("lora", remove(LORA), LORA, "saved lora weights"),
    "lora_weights_wrong_shape": ("lora", edit_tensors(LORA, lambda t, k: t.update({k: torch.zeros(1, 1)})),
                                 LORA, "has shape [1, 1]"),
    "lora_weights_wrong_dtype": ("lora", edit_tensors(LORA, lambda t, k: t.update({k: t[k].half()})), LORA,
                                 "is float16, the model's is float32"),
    "lora_weights_nan": ("lora", edit_tensors(LORA, set_first(float("nan"))), LORA,
                         "holds NaN or infinite values"),
    "lora_weights_tensor_missing": ("lora", edit_tensors(LORA, lambda t, k: t.pop(k)), LORA,
                                    "lacks the tensor"),
    "delta_missing": ("fishertune", remove("tuner/delta.safetensors"), "delta.safetensors", "no delta file"),
    "delta_indices_as_floats": ("fishertune", edit_delta(".indices", lambda t: t.float()),
                                "delta.safetensors", "int32 or int64 indices"),
    "delta_values_nan": ("fishertune", edit_delta(".values", lambda t: torch.full_like(t, float("nan"))),
                         "delta.safetensors", "NaN or infinity"),
}


@pytest.mark.parametrize("case", TAMPERED, ids=str)
def test_a_tampered_export_is_one_line(case, exports, scenes, tmp_path, capsys):
    method, damage, named, message = TAMPERED[case]
    export = Path(shutil.copytree(exports[method], tmp_path / "export"))
    damage(export)
    args = ["eval", str(export), "--data", f"folder:{scenes / 'fog'}", "--no-progress"]
    assert main(args) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "mIoU" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert Path(named).name in lines[0] and message in lines[0], lines[0]
    with pytest.raises(FisherTuneError) as error:  # the Python API refuses it with the same line
        fishertune.load_pretrained(export)
    assert f"error: {error.value}" == lines[0]


def test_an_empty_backbone_location_is_one_line(exports, scenes, tmp_path, capsys):
    with pytest.raises(FisherTuneError, match="the backbone location given is empty"):
        fishertune.load_pretrained(exports["lora"], backbone="")
    image = next((scenes / "fog" / "images").iterdir())
    assert main(["predict", str(exports["lora"]), str(image), "--out", str(tmp_path / "p"), "--backbone", " ",
                 "--no-progress"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the backbone location given is empty" in err[0]
    assert not (tmp_path / "p").exists()
