"""`fishertune` end to end on tiny data: train -> eval -> predict, help texts, and each bad input."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import tiny_config, write_config
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from fishertune.cli.main import main
from fishertune.sparse import dr_fim
from fishertune.tuners.fishertune import FisherTuneTunerConfig

COMMANDS = [["synth"], ["train"], ["eval"], ["fisher"], ["predict"], ["data"], ["data", "check"], ["list"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: fishertune" in capsys.readouterr().out


SHARED_FLAGS = {"--mode": {"eval", "predict"}, "--crop": {"eval", "predict"}, "--stride": {"eval", "predict"},
                "--no-progress": {"train", "eval", "fisher", "predict", "demo"},
                "--set": {"train", "fisher", "demo"}, "--max-pixels": {"predict", "data check"}}


def test_shared_flags_are_one_definition():
    """A flag several commands take (cli/main.py's add_*_arg helpers) is the same in each: name, dest, type,
    default, choices; its help too, but for --set, whose help says what it does in that command."""
    import argparse

    from fishertune.cli.main import build_parser

    def subparsers(parser, prefix=""):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{prefix}{name}", sub
                    yield from subparsers(sub, f"{prefix}{name} ")

    found = {flag: {} for flag in SHARED_FLAGS}
    for command, sub in subparsers(build_parser([])):
        for action in sub._actions:
            for flag in set(action.option_strings) & set(SHARED_FLAGS):
                found[flag][command] = {key: getattr(action, key) for key in (
                    "option_strings", "dest", "type", "default", "choices", "nargs", "const", "metavar",
                    "required", "help") if key != "help" or flag != "--set"} | {"class": type(action)}
    for flag, commands in SHARED_FLAGS.items():
        assert set(found[flag]) == commands, flag
        first, *others = found[flag].values()
        assert all(other == first for other in others), (flag, found[flag])


def test_cli_import_is_light():
    """`fishertune --help` does not pay for the models: the CLI imports engine, models and transformers
    inside the commands. (torch itself comes with the package's top-level sparse-core API.)"""
    heavy = ("{'transformers', 'fishertune.engine.trainer', 'fishertune.models', 'fishertune.data', "
             "'matplotlib'}")
    code = f"import sys, fishertune.cli.main; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def trained_run(synth_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    config = write_config(tmp / "tiny.yaml", tiny_config(synth_dir))
    run = tmp / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 0
    return run


def test_train_writes_a_complete_run(trained_run):
    for name in ("config.yaml", "log.jsonl", "model.safetensors", "results.json", "tuner/tuner_config.json",
                 "checkpoints/latest.json"):
        assert (trained_run / name).is_file(), name
    entry = json.loads((trained_run / "results.json").read_text())["methods"]["full"]
    assert set(entry) >= {"trainable_params", "source_miou", "target_miou", "mean_target_miou",
                          "train_seconds"}
    assert list(entry["target_miou"]) == ["fog"]
    assert 0 <= entry["target_miou"]["fog"] <= 100
    assert entry["mean_target_miou"] == entry["target_miou"]["fog"]
    weights = load_file(trained_run / "model.safetensors")
    backbone = sum(t.numel() for name, t in weights.items() if name.startswith("backbone."))
    assert entry["trainable_params"] == backbone  # full fine-tuning trains the whole backbone
    records = [json.loads(line) for line in (trained_run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["phase"] in ("warmup", "tune")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [r["phase"] for r in records if r["step"] <= 2] == ["warmup", "warmup"]
    # the poly schedule decays the backbone lr after the head-only warm-up
    tune_lrs = [r["lr"] for r in records if r["phase"] == "tune"]
    assert tune_lrs == sorted(tune_lrs, reverse=True) and tune_lrs[0] == pytest.approx(1e-3)


def test_eval_json_matches_the_runs_results(trained_run, synth_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(trained_run), "--data", f"folder:{synth_dir / 'eval' / 'fog'}",
                 "--data", f"folder:{synth_dir / 'eval' / 'source_val'}", "--json", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.read_text())
    trained = json.loads((trained_run / "results.json").read_text())["methods"]["full"]
    assert result["target_miou"]["fog"] == trained["target_miou"]["fog"]
    assert result["target_miou"]["source_val"] == trained["source_miou"]
    assert result["mean_target_miou"] == pytest.approx(np.mean(list(result["target_miou"].values())))
    assert set(result["per_class_iou"]["fog"]) >= {"road", "sky", "car"}
    printed = capsys.readouterr().out
    assert "fog" in printed
    lines = printed.splitlines()
    assert lines[0].split() == ["class", "fog", "source_val"]  # the per-class table, mmseg style
    for name, iou in result["per_class_iou"]["fog"].items():  # as the JSON has it, to 2 decimals
        (row,) = [line for line in lines[1:20] if line.startswith(name + "  ")]
        assert row.split()[-2] == ("-" if iou is None else f"{iou:.2f}")
    slide = tmp_path / "slide.json"
    assert main(["eval", str(trained_run), "--mode", "slide", "--crop", "16", "--stride", "12", "--json",
                 str(slide), "--no-progress"]) == 0  # default data: the run's targets
    result = json.loads(slide.read_text())
    assert result["inference"] == {"mode": "slide", "crop": 16, "stride": 12, "window_batch": 8}
    assert list(result["target_miou"]) == ["fog"] and 0 <= result["target_miou"]["fog"] <= 100


def test_predict_writes_masks_and_overlays(trained_run, synth_dir, tmp_path, capsys):
    images = sorted((synth_dir / "eval" / "fog" / "images").glob("*.png"))[:2]
    out = tmp_path / "pred"
    assert main(["predict", str(trained_run), *map(str, images), "--out", str(out), "--overlay",
                 "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 2 predictions and their overlays to {out}"
    for image in images:
        for name in (f"{image.stem}.png", f"{image.stem}_overlay.png"):
            assert np.asarray(Image.open(out / name)).shape == (32, 32, 3)
    mask = np.asarray(Image.open(out / f"{images[0].stem}.png")).reshape(-1, 3)
    from fishertune.data.labels import PALETTE

    assert {tuple(c) for c in mask} <= {tuple(c) for c in PALETTE}  # only Cityscapes colours


def test_predict_formats_agree_and_same_named_inputs_get_their_own_outputs(trained_run, synth_dir, tmp_path):
    """a/images/000.png and b/images/000.png give two outputs, mirrored under --out; the three formats encode
    one prediction (label id = cityscapesscripts' id of the train id; colour = its palette entry)."""
    import shutil

    from cityscapesscripts.helpers.labels import trainId2label

    source = sorted((synth_dir / "eval" / "fog" / "images").glob("*.png"))[:2]
    inputs = []
    for folder, image in zip("ab", source):
        (tmp_path / folder / "images").mkdir(parents=True)
        inputs.append(Path(shutil.copy(image, tmp_path / folder / "images" / "000.png")))
    outputs = {}
    for fmt in ("trainid", "labelid", "color"):
        out = tmp_path / f"out_{fmt}"
        assert main(["predict", str(trained_run), *map(str, inputs), "--out", str(out), "--format", fmt]) == 0
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a/images/000.png",
                                                                                      "b/images/000.png"]
        outputs[fmt] = [np.asarray(Image.open(out / f"{f}/images/000.png")) for f in "ab"]
    for train_ids, label_ids, colours in zip(outputs["trainid"], outputs["labelid"], outputs["color"]):
        assert train_ids.shape == (32, 32) and train_ids.max() < 19
        expected_ids = np.vectorize(lambda t: trainId2label[int(t)].id)(train_ids)
        assert np.array_equal(label_ids, expected_ids)
        colour_list = [trainId2label[int(t)].color for t in train_ids.ravel()]
        expected_colours = np.array(colour_list).reshape(32, 32, 3)
        assert np.array_equal(colours, expected_colours)


def test_predict_refuses_collisions_and_bad_inputs_before_writing(trained_run, synth_dir, tmp_path, capsys):
    import shutil

    image = sorted((synth_dir / "eval" / "fog" / "images").glob("*.png"))[0]
    (tmp_path / "in").mkdir()
    png = Path(shutil.copy(image, tmp_path / "in" / "x.png"))
    Image.open(image).convert("RGB").save(tmp_path / "in" / "x.jpg")
    cases = [([str(png), str(tmp_path / "in" / "x.jpg")], tmp_path / "out", "would both be written to"),
             ([str(png)], tmp_path / "in", "would overwrite the input"),
             ([str(png), str(tmp_path / "in" / "missing.png")], tmp_path / "out", "image not found")]
    for images, out, message in cases:
        assert main(["predict", str(trained_run), *images, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["x.jpg", "x.png"]
    assert main(["predict", str(trained_run), "--out", str(tmp_path / "out")]) == 2
    assert "either image files or --data" in capsys.readouterr().err


# -- bad input: one line on stderr, exit 2, no traceback, nothing written -----------------------------------


def make_bad_folder(root: Path, synth_dir: Path, problem: str) -> Path:
    """A copy of the source folder with one broken file."""
    import shutil

    folder = root / f"bad_{problem}"
    shutil.copytree(synth_dir / "source", folder)
    label = folder / "labels" / "00001.png"
    if problem == "corrupt_image":
        (folder / "images" / "00001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    elif problem == "label_size":
        Image.fromarray(np.zeros((20, 32), np.uint8)).save(label)
    elif problem == "label_values":
        Image.fromarray(np.full((32, 32), 40, np.uint8)).save(label)
    elif problem == "mixed_sizes":
        Image.fromarray(np.zeros((24, 28, 3), np.uint8)).save(folder / "images" / "00001.png")
        Image.fromarray(np.zeros((24, 28), np.uint8)).save(label)
    return folder


BAD_TRAIN = {
    "missing_folder": ({"data": {"train": "folder:/no/such/folder"}}, "folder not found"),
    "corrupt_image": ("corrupt_image", "cannot read image"),
    "label_wrong_size": ("label_size", "is 32x20 but its image is 32x32"),
    "label_out_of_range": ("label_values", "holds values outside 0-18 and 255"),
    "unknown_config_key": ({"train": {"stepz": 3}},
                           "unknown config key 'train.stepz' (did you mean 'train.steps'?)"),
    "mixed_sizes_without_crop": ("mixed_sizes", "training images differ in size"),
    "unknown_augment_option": ({"data": {"crop": 24, "augment": {"flip": 0.5}}},
                               "unknown option data.augment.flip (did you mean data.augment.flip_prob?)"),
    "unknown_augment_option_without_crop": ({"data": {"augment": {"hflipp": True}}},
                                            "unknown option data.augment.hflipp"),
    "augment_without_crop": ({"data": {"augment": {"flip_prob": 0.5}}},
                             "data.augment applies with data.crop only"),
    "wrong_backbone": ({"model": {"backbone": "dinov3"}}, "unknown backbone 'dinov3'"),
    "overflowing_lr": ({"train": {"head_lr": 1e39}}, "train.head_lr must be in [0, 1e+30], got 1e+39"),
    "unknown_method": ({"method": {"name": "lorra"}}, "unknown method 'lorra' (did you mean 'lora'?)"),
    "bad_method_option": ({"method": {"name": "lora", "options": {"rnak": 2}}},
                          "unknown config key 'method.options.rnak' (did you mean 'method.options.rank'?)"),
}


@pytest.mark.parametrize("case", BAD_TRAIN, ids=str)
def test_bad_training_input_is_one_clear_line(case, synth_dir, tmp_path, capsys):
    change, message = BAD_TRAIN[case]
    config = tiny_config(synth_dir)
    if isinstance(change, str):
        config["data"]["train"] = f"folder:{make_bad_folder(tmp_path, synth_dir, change)}"
    else:
        for section, values in change.items():
            config[section].update(values)
    run = tmp_path / "run"
    code = main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not run.exists()  # nothing half-written


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(synth_dir, tmp_path, capsys):
    config = tiny_config(synth_dir, train={"warmup_steps": 0, "steps": 4, "lr": 1e30, "head_lr": 1e30,
                                           "checkpoint_every": 1})
    run = tmp_path / "run"
    code = main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "loss became nan at step 1" in err[0], err
    assert "the last checkpoint" in err[0] and "--resume" in err[0]
    assert (run / "checkpoints" / "step_0000001").is_dir()
    assert not (run / "model.safetensors").exists() and not (run / "results.json").exists()


def test_gradient_accumulation_equals_the_larger_batch(synth_dir, tmp_path):
    """Batch 2 x 2 accumulated micro-batches takes the same steps as batch 4 (same images, same order)."""
    head = {"head": "multilevel", "head_options": {"channels": 16, "dropout": 0.0}}  # batch-independent
    weights, losses = [], []
    for name, batch, accum in (("big", 4, 1), ("accum", 2, 2)):
        config = tiny_config(synth_dir, model=head, data={"batch_size": batch, "val": None, "targets": []},
                             train={"grad_accum": accum, "checkpoint_every": 0, "eval_every": 0})
        run = tmp_path / name
        assert main(["train", str(write_config(tmp_path / f"{name}.yaml", config)), "--out", str(run),
                     "--no-progress"]) == 0
        weights.append(load_file(run / "model.safetensors"))
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        losses.append([r["loss"] for r in records if "loss" in r])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for name, tensor in weights[0].items():
        if tensor.dim() >= 2:  # matrices (vectors: see the DDP test); Adam amplifies rounding a little
            assert (weights[1][name] - tensor).norm() / tensor.norm() < 1e-3, name


def test_existing_run_folder_is_not_overwritten(trained_run, capsys):
    before = (trained_run / "model.safetensors").read_bytes()
    assert main(["train", str(trained_run / "config.yaml"), "--out", str(trained_run)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (trained_run / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(("args", "message"), [
    (["eval", "{tmp}/nothing", "--data", "folder:{tmp}"], "is not a run folder"),
    (["eval", "{run}", "--data", "folder:{tmp}/missing"], "folder not found"),
    (["eval", "{run}", "--data", "kitti:{tmp}"], "unknown dataset 'kitti'"),
    (["predict", "{run}", "{tmp}/missing.png", "--out", "{tmp}/pred"], "image not found"),
    (["predict", "{run}", "{tmp}", "--out", "{tmp}/pred"], "{tmp} is a folder: give its image files"),
    (["train", "{tmp}/missing.yaml", "--out", "{tmp}/r"], "config file not found"),
    (["train", "{run}/config.yaml", "--set", "train.lr", "--out", "{tmp}/r"], "--set expects key.sub=value"),
    (["train", "{run}/config.yaml", "--out", "{tmp}/r", "--resume"],
     "nothing to resume: {tmp}/r holds no run"),
    (["train", "{run}/config.yaml", "--set", "train.seed=9", "--out", "{run}", "--resume"],
     "the config differs from"),
    (["synth", "--out", "{tmp}/s", "--domains", "fgo"], "unknown synthetic domain 'fgo' (did you mean 'fog'"),
])
def test_other_bad_input(args, message, trained_run, tmp_path, capsys):
    args = [a.format(tmp=tmp_path, run=trained_run) for a in args]
    message = message.format(tmp=tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not any((tmp_path / name).exists() for name in ("pred", "r", "s"))


def test_console_script_exits_2_without_traceback(tmp_path):
    """The installed entry point (not only main()) turns bad input into exit status 2."""
    result = subprocess.run([sys.executable, "-m", "fishertune.cli", "train", str(tmp_path / "x.yaml"),
                             "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: config file not found: {tmp_path / 'x.yaml'}"


def test_fisher_writes_scores_heatmap_and_selection_table(synth_dir, tmp_path):
    options = {"budget": 300, "growth_start": None}
    config = tiny_config(synth_dir, method={"name": "fishertune", "options": options},
                         train={"warmup_steps": 1})
    out = tmp_path / "fisher"
    assert main(["fisher", str(write_config(tmp_path / "c.yaml", config)), "--out", str(out),
                 "--no-progress"]) == 0
    scores = load_file(out / "scores.safetensors")
    masks = {k.removeprefix("mask/"): v for k, v in scores.items() if k.startswith("mask/")}
    assert masks and all(name.startswith("backbone.") for name in masks)  # the head is never a candidate
    assert {k.removeprefix("dr_fim/") for k in scores if k.startswith("dr_fim/")} == set(masks)
    assert sum(int(m.sum()) for m in masks.values()) == 300  # the count asked for, exactly
    with safe_open(out / "scores.safetensors", "pt") as f:  # one batch: the scores follow from F, F', draws
        (draws,) = json.loads(f.metadata()["draws"])
    part = {p: {n.removeprefix(p): v for n, v in scores.items() if n.startswith(p)}
            for p in ("fisher/", "fisher_perturbed/", "dr_fim/")}
    shipped = FisherTuneTunerConfig()  # the stabilised estimate: floor γ/τ², scale γ (docs/method.md §4)
    expected = dr_fim(part["fisher/"], part["fisher_perturbed/"], draws["eps_mu"], draws["eps_sigma"],
                      normalize=shipped.normalize, prior_floor=shipped.var_gamma / shipped.var_tau ** 2,
                      scale=shipped.var_gamma)
    assert draws["eps_mu"] != 0 and expected.keys() == part["dr_fim/"].keys()
    for n in expected:
        torch.testing.assert_close(expected[n], part["dr_fim/"][n])  # to rounding: names in file order
    import csv

    rows = list(csv.DictReader((out / "selection.csv").open()))
    assert sum(int(r["selected"]) for r in rows) == 300
    assert sum(int(r["total"]) for r in rows) == sum(m.numel() for m in masks.values())
    for image in ("heatmap.png", "selection.png"):
        assert Image.open(out / image).size[0] > 100
    assert "| block |" in (out / "selection.md").read_text()
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["estimation_images"] == 4 and analysis["reliability"]["images_per_half"] == 2
    assert all(-1 <= analysis["reliability"][k] <= 1 for k in ("task", "domain"))
    assert 0 <= analysis["overlap"]["random"] < analysis["overlap"]["fim"] <= 1  # DR-FIM builds on F
    assert sum(analysis["module_share"].values()) == pytest.approx(1.0)
    assert "split-half reliability" in (out / "selection.md").read_text()
    # a second call must not overwrite the first one's files
    assert main(["fisher", str(tmp_path / "c.yaml"), "--out", str(out), "--no-progress"]) == 2


def test_data_check_names_every_bad_file(synth_dir, tmp_path, capsys):
    assert main(["data", "check", f"folder:{synth_dir / 'source'}"]) == 0
    assert "fine" in capsys.readouterr().out
    folder = make_bad_folder(tmp_path, synth_dir, "corrupt_image")
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(folder / "labels" / "00002.png")
    Image.fromarray(np.full((32, 32), 40, np.uint8)).save(folder / "labels" / "00003.png")
    (folder / "labels" / "00004.png").unlink()
    assert main(["data", "check", f"folder:{folder}"]) == 1
    out = capsys.readouterr().out
    for name in ("images/00001.png", "labels/00002.png", "labels/00003.png", "00004"):
        assert name in out, name
    assert main(["data", "check", f"folder:{tmp_path / 'none'}"]) == 2
    assert capsys.readouterr().err.startswith("error: folder not found")


def test_docs_cover_every_command():
    import argparse

    from fishertune.cli.main import build_parser

    docs = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    parser = build_parser(["demo"])
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    names = [n if n != "data" else "data check" for n in commands.choices]
    assert {"synth", "train", "eval", "fisher", "predict", "data check"} <= set(names)
    for name in names:
        assert f"## `fishertune {name}`" in docs, name


def registered_methods() -> list[str]:
    from fishertune.tuners import TUNERS

    return sorted(TUNERS)


@pytest.mark.parametrize("method", registered_methods())
def test_every_method_trains_and_its_run_evaluates_the_same(method, synth_dir, tmp_path):
    """train -> eval over the tuner registry: `eval` rebuilds the method's modules (adapters, tokens, LoRA)
    and loads the run's weights, reproducing the run's own target mIoU exactly."""
    config = tiny_config(synth_dir, method={"name": method}, data={"val": None},
                         train={"warmup_steps": 1, "steps": 1, "checkpoint_every": 0, "eval_every": 0})
    run = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out", str(run),
                 "--no-progress"]) == 0
    assert main(["eval", str(run), "--json", str(tmp_path / "e.json"), "--no-progress"]) == 0
    entry = json.loads((run / "results.json").read_text())["methods"][method]
    assert json.loads((tmp_path / "e.json").read_text())["target_miou"] == entry["target_miou"]
    assert (run / "tuner" / "tuner_config.json").is_file()


@pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                    reason="eva02 needs the timm extra (bash scripts/test_eva02.sh)")
def test_eva02_trains_with_fishertune_and_its_run_evaluates_the_same(synth_dir, tmp_path):
    """The whole path on EVA02: Fisher selection, training, sliding-window evaluation, reload by `eval`."""
    from fishertune.models import tiny_backbone_config

    model = {"backbone": "eva02", "backbone_config": tiny_backbone_config("eva02")}
    config = tiny_config(synth_dir, model=model,
                         method={"name": "fishertune", "options": {"budget": 0.05}}, data={"val": None},
                         train={"warmup_steps": 1, "steps": 2, "checkpoint_every": 0, "eval_every": 0},
                         eval={"mode": "slide", "crop": 24, "stride": 16})
    run = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out", str(run),
                 "--no-progress"]) == 0
    assert main(["eval", str(run), "--json", str(tmp_path / "e.json"), "--no-progress"]) == 0
    entry = json.loads((run / "results.json").read_text())["methods"]["fishertune"]
    assert entry["trainable_params"] > 0 and entry["target_miou"] is not None
    assert json.loads((tmp_path / "e.json").read_text())["target_miou"] == entry["target_miou"]


def test_a_reader_that_leaves_stops_the_output_quietly():
    """`fishertune list | head -1`: once the pipe's reader is gone, the command ends with the shell's
    SIGPIPE status (128 + 13) and prints no error."""
    with subprocess.Popen([sys.executable, "-m", "fishertune.cli", "list"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        process.stdout.close()  # before the interpreter has started, so every write finds no reader
        assert process.wait(timeout=120) == 141
        assert process.stderr.read() == b""
