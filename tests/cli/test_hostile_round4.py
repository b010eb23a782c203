"""Hostile input, round 4: YAML keys that are not names, config paths that name no file, output paths that
are empty or not UTF-8, a synthetic scene over the image limit, backbone_config values transformers
refuses, run folders whose files are links, a --resume into a folder that holds no run (or lost its
checkpoint pointer), and outputs that would replace a user's file. Each case asserts the exit status, one
line naming the problem, no traceback, and nothing of the user's lost."""

import shutil
from pathlib import Path

import pytest
from cli_helpers import one_line, snapshot, tiny_config, write_config
from PIL import Image

from fishertune.cli.main import main
from fishertune.errors import EXIT_BAD_INPUT


@pytest.mark.parametrize("text, message", [
    ("? [a]\n: 2\n", "a key must be a name, not a list"),
    ("model:\n  ? {a: 1}\n  : 2\n", "a key must be a name, not a dict")])
def test_a_yaml_key_that_is_not_a_name_is_one_line(text, message, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(text)
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == EXIT_BAD_INPUT
    assert message in one_line(capsys) and not (tmp_path / "r").exists()


@pytest.mark.parametrize("path", [".", "/", "base_dot"])
def test_a_config_path_that_names_a_folder_is_not_found(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if path == "base_dot":
        (tmp_path / "b.yaml").write_text("base: .\n")
    config = "b.yaml" if path == "base_dot" else path
    assert main(["train", config, "--out", "r"]) == EXIT_BAD_INPUT
    assert "config file not found: " in one_line(capsys) and not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv", [["eval", "{run}", "--json", ""], ["predict", "{run}", "x.png", "--out", ""],
                                  ["train", "c.yaml", "--out", b"r\xff".decode(errors="surrogateescape")],
                                  ["export", "{run}", "--out", b"x\xff".decode(errors="surrogateescape")]])
def test_an_empty_or_undecodable_output_path_is_refused(argv, finished_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([a.format(run=finished_run) for a in argv])
    assert exit_.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "is empty: give a path" in err or "is not valid UTF-8" in err
    assert list(tmp_path.iterdir()) == []


def test_a_synthetic_scene_over_the_image_limit_is_refused(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--size", "100000"]) == EXIT_BAD_INPUT
    assert "--size 100000 is too large" in one_line(capsys) and not (tmp_path / "s").exists()


@pytest.mark.parametrize("name", [".lock", "log.jsonl"])
def test_a_run_file_that_is_a_link_is_never_written_through(name, finished_run, synth_dir, tmp_path, capsys):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(victim)
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, train={"warmup_steps": 1, "steps": 2,
                                                                             "checkpoint_every": 0,
                                                                             "eval_every": 0}))
    assert main(["train", str(config), "--out", str(run), "--resume", "--no-progress"]) == EXIT_BAD_INPUT
    assert f"{run / name} is a symbolic link" in one_line(capsys)
    assert victim.read_text() == "precious"


def test_resume_into_a_folder_of_other_files_gives_no_advice_to_delete_it(synth_dir, tmp_path, capsys):
    data = Path(shutil.copytree(synth_dir / "eval" / "fog", tmp_path / "fog"))
    before = snapshot(data)
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir))
    assert main(["train", str(config), "--out", str(data), "--resume", "--no-progress"]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert f"nothing to resume: {data} holds no run" in line and "delete" not in line
    assert snapshot(data) == before


def test_a_checkpoint_without_its_pointer_is_resumed(synth_dir, tmp_path, capsys):
    """A run killed between renaming its first checkpoint into place and writing latest.json resumes from
    it (the folder is renamed only when complete), to the uninterrupted run's weights."""
    train = {"warmup_steps": 1, "steps": 3, "checkpoint_every": 2, "eval_every": 0}
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, train=train))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["train", str(config), "--out", str(whole), "--no-progress"]) == 0
    short = write_config(tmp_path / "short.yaml", tiny_config(synth_dir, train={**train, "steps": 1}))
    assert main(["train", str(short), "--out", str(cut), "--no-progress"]) == 0
    for name in ("model.safetensors", "results.json", "checkpoints/latest.json"):
        (cut / name).unlink()
    assert [p.name for p in (cut / "checkpoints").iterdir()] == ["step_0000002"]
    assert main(["train", str(config), "--out", str(cut), "--resume", "--no-progress"]) == 0
    assert (cut / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()


def test_predict_replaces_an_existing_file_only_when_asked(finished_run, synth_dir, tmp_path, capsys):
    image = sorted((synth_dir / "eval" / "fog" / "images").glob("*.png"))[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / image.name).write_text("the user's notes")
    assert main(["predict", str(finished_run), str(image), "--out", str(out), "--no-progress"]) == 2
    assert "which exists: pass --overwrite" in one_line(capsys)
    assert (out / image.name).read_text() == "the user's notes"
    assert main(["predict", str(finished_run), str(image), "--out", str(out), "--overwrite",
                 "--no-progress"]) == 0
    assert Image.open(out / image.name).size == Image.open(image).size


def test_export_onnx_replaces_only_an_earlier_onnx_export(finished_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    target = tmp_path / "m.onnx"
    target.write_text("notes")
    assert main(["export", str(finished_run), "--onnx", str(target)]) == EXIT_BAD_INPUT
    assert "exists and is not an ONNX export of FisherTune" in one_line(capsys)
    assert target.read_text() == "notes"
    target.unlink()
    assert main(["export", str(finished_run), "--onnx", str(target)]) == 0
    assert main(["export", str(finished_run), "--onnx", str(target)]) == 0  # its own earlier export


@pytest.mark.parametrize("value, reason", [("hidden_act=bogus", "KeyError: 'bogus'"),
                                           ("hidden_dropout_prob=2", "dropout probability"),
                                           ("layer_norm_eps=1", "'layer_norm_eps' expected float")])
def test_a_backbone_config_value_transformers_refuses_is_one_line(value, reason, synth_dir, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir))
    assert main(["train", str(config), "--out", str(tmp_path / "r"), "--no-progress",
                 "--set", f"model.backbone_config.{value}"]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert line.startswith("error: model.backbone_config does not build a dinov2 backbone: ")
    assert reason in line
    assert not (tmp_path / "r").exists()


def test_a_bad_target_found_after_training_keeps_the_checkpoint_and_says_resume(synth_dir, tmp_path, capsys):
    """Target images are read when the run evaluates them, after training: the message says what to do next,
    and --resume with the targets mended finishes the run without training again."""
    bad = Path(shutil.copytree(synth_dir / "eval" / "fog", tmp_path / "bad"))
    image = sorted((bad / "images").glob("*.png"))[0]
    image.write_bytes(image.read_bytes()[:200])
    train = {"warmup_steps": 1, "steps": 2, "checkpoint_every": 1, "eval_every": 0}
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, train=train,
                                                           data={"targets": [f"folder:{bad}"]}))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert f"cannot read image {image}" in line and "is kept: continue with the same `fishertune train` " \
        "command plus --resume" in line
    assert main(["train", str(config), "--out", str(run), "--resume", "--no-progress",
                 "--set", f"data.targets=[folder:{synth_dir / 'eval' / 'fog'}]"]) == 0
    assert (run / "model.safetensors").is_file()


def test_an_image_given_twice_and_a_private_flag_without_a_push_are_named(finished_run, synth_dir, tmp_path,
                                                                          capsys):
    image = sorted((synth_dir / "eval" / "fog" / "images").glob("*.png"))[0]
    assert main(["predict", str(finished_run), str(image), str(image), "--out", str(tmp_path / "p")]) == 2
    assert one_line(capsys) == f"error: {image} is given twice"
    assert main(["export", str(finished_run), "--out", str(tmp_path / "e"), "--private"]) == 2
    assert "--private applies to --push-to-hub" in one_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_window_size_for_whole_image_inference_is_refused(finished_run, synth_dir, tmp_path, capsys):
    """The finished run infers on whole images: --crop without --mode slide would be silently unused."""
    assert main(["eval", str(finished_run), "--data", f"folder:{synth_dir / 'eval' / 'fog'}", "--crop", "16",
                 "--no-progress"]) == EXIT_BAD_INPUT
    assert "--crop and --stride size the sliding windows: add --mode slide" in one_line(capsys)


def test_a_renamed_option_warns_in_one_line(synth_dir, tmp_path):
    """The program shows FisherTune's own FutureWarnings (an old option name) as `warning: ...`, one line."""
    import subprocess
    import sys

    config = tiny_config(synth_dir, method={"name": "fishertune", "options": {"ratio": 0.05}},
                         train={"warmup_steps": 1, "steps": 1, "checkpoint_every": 0, "eval_every": 0})
    result = subprocess.run([sys.executable, "-m", "fishertune.cli", "train",
                             str(write_config(tmp_path / "c.yaml", config)), "--out", str(tmp_path / "r"),
                             "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "ratio" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "FutureWarning" not in result.stderr
