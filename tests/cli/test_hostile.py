"""Hostile input and faults (issue "Hostile input and faults"): each case asserts the exit status, that
no traceback is printed, that the one `error:` line names the problem, and that files are untouched."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import changed_config, one_line, refused_before_training, snapshot, tiny_config, write_config
from PIL import Image

from fishertune.cli.main import main
from fishertune.errors import EXIT_BAD_INPUT, EXIT_BUG, FisherTuneError, InputError, UsageError

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fishertune.cli", *args]


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


# -- 1. one place where errors become messages ---------------------------------------------------------------

CORRUPTIONS = {
    "truncated_model": ("model.safetensors", lambda b: b[: len(b) // 2], ["eval"],
                        "cannot read model weights"),
    "bad_header_model": ("model.safetensors", lambda b: b"\xff" * 8 + b[8:], ["eval"],
                         "cannot read model weights"),
    "bad_latest_json": ("checkpoints/latest.json", lambda b: b"{not json", ["resume"],
                        "checkpoint pointer"),
    "latest_outside_run": ("checkpoints/latest.json", lambda b: b'{"step": 3, "path": "../../elsewhere"}',
                           ["resume"], "must name a step_* folder inside"),
    "truncated_state": ("checkpoints/step_0000003/state.safetensors", lambda b: b[:20], ["resume"],
                        "cannot read checkpoint state"),
    "bad_state_json": ("checkpoints/step_0000003/state.json", lambda b: b'{"step": 3}', ["resume"],
                       "is damaged"),
    "missing_state_json": ("checkpoints/step_0000003/state.json", None, ["resume"],
                           "checkpoint state"),
    "bad_results_json": ("results.json", lambda b: b"{not json", ["export"], "run results"),
    "results_json_not_methods": ("results.json", lambda b: b'{"methods": [1]}', ["export"],
                                 "results hold no methods"),
}


@pytest.mark.parametrize("case", CORRUPTIONS, ids=str)
def test_corrupt_run_files_are_one_line(case, run_copy, capsys):
    name, damage, (command,), message = CORRUPTIONS[case]
    target = run_copy / name
    if damage is None:
        target.unlink()
    else:
        target.write_bytes(damage(target.read_bytes()))
    before = snapshot(run_copy)
    if command == "eval":
        args = ["eval", str(run_copy), "--no-progress"]
    elif command == "export":
        args = ["export", str(run_copy), "--out", str(run_copy.parent / "exported")]
    else:
        args = ["train", str(run_copy / "config.yaml"), "--out", str(run_copy), "--resume", "--no-progress"]
    assert main(args) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert message in line and name.split("/")[-1] in line, line
    assert snapshot(run_copy) == before
    assert not (run_copy.parent / "exported").exists()


def test_corrupt_saved_tuner_is_one_error(run_copy):
    from fishertune.engine.build import build_model
    from fishertune.engine.config import load_config
    from fishertune.tuners import load_tuner

    model, _ = build_model(load_config(run_copy / "config.yaml"))
    weights = run_copy / "tuner" / "tuner_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(InputError, match="cannot read saved full weights"):
        load_tuner(str(run_copy / "tuner"), model)
    (run_copy / "tuner" / "tuner_config.json").write_text("{\"method\": ")
    with pytest.raises(InputError, match="tuner_config.json is not valid JSON"):
        load_tuner(str(run_copy / "tuner"), model)


def test_a_bug_prints_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    from fishertune.cli import commands

    def broken(args):
        return 1 // 0

    monkeypatch.setattr(commands, "run_synth", broken)
    assert main(["synth", "--out", "x"]) == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "please report it" in err


def test_usage_errors_are_bugs_from_the_cli_but_value_errors_in_the_api(monkeypatch, capsys):
    from fishertune.cli import commands

    def misuse(args):
        raise UsageError("select_topk: give exactly one of ratio or count")

    monkeypatch.setattr(commands, "run_synth", misuse)
    assert main(["synth", "--out", "x"]) == EXIT_BUG
    assert "please report it" in capsys.readouterr().err
    assert issubclass(UsageError, ValueError) and issubclass(UsageError, FisherTuneError)
    assert issubclass(InputError, FisherTuneError) and not issubclass(InputError, UsageError)


def test_os_errors_are_translated(monkeypatch, capsys):
    from fishertune.cli import commands

    def disk_full(args):
        raise OSError(28, "No space left on device", "/runs/x/model.safetensors")

    monkeypatch.setattr(commands, "run_synth", disk_full)
    assert main(["synth", "--out", "x"]) == EXIT_BAD_INPUT
    assert one_line(capsys) == ("error: cannot write /runs/x/model.safetensors: No space left on device "
                                "(free some space, or write elsewhere)")


def test_non_utf8_config_and_base_cycle(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("train: {steps: 3}  # caf\xe9\n".encode("latin-1"))
    assert main(["train", str(config), "--out", str(tmp_path / "r")]) == EXIT_BAD_INPUT
    assert "is not UTF-8" in one_line(capsys)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "loop.yaml").write_text("base: ../a/loop.yaml\ntrain: {steps: 3}\n")
    assert main(["train", str(tmp_path / "a" / "loop.yaml"), "--out", str(tmp_path / "r")]) == EXIT_BAD_INPUT
    assert "includes itself through its bases" in one_line(capsys)
    assert not (tmp_path / "r").exists()


# -- 2. run folders are owned --------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_trainings_into_one_folder_at_once(synth_dir, tmp_path):
    """The race: both start together; one trains, the other is refused at once and touches nothing."""
    run = tmp_path / "run"
    configs = [write_config(tmp_path / f"c{seed}.yaml", tiny_config(synth_dir, train={"seed": seed}))
               for seed in (11, 12)]
    processes = [subprocess.Popen(cli("train", str(c), "--out", str(run), "--no-progress"), env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, EXIT_BAD_INPUT], outcomes
    winner = [seed for (code, _), seed in zip(outcomes, (11, 12)) if code == 0][0]
    (loser_err,) = [err for code, err in outcomes if code != 0]
    assert "Traceback" not in loser_err
    lines = loser_err.strip().splitlines()
    assert len(lines) == 1 and ("is in use by another training" in lines[0]
                                or "already exists and is not empty" in lines[0]), lines
    # the folder is the winner's alone: its config, a complete result, no lock left behind
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == winner
    assert (run / "results.json").is_file() and (run / "model.safetensors").is_file()
    assert not (run / ".lock").exists()


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(run_copy, capsys):
    from fishertune.engine.run_folder import RunFolder

    owner = RunFolder(run_copy)
    owner.lock()  # another training holds the folder
    before = snapshot(run_copy)
    args = ["train", str(run_copy / "config.yaml"), "--out", str(run_copy), "--resume", "--no-progress"]
    assert main(args) == EXIT_BAD_INPUT
    assert f"pid {os.getpid()}" in one_line(capsys)
    assert snapshot(run_copy) == before
    owner.unlock()
    # a lock file left by a dead process (kill -9 leaves it, but no process holds its flock) is stale
    (run_copy / ".lock").write_text("pid 999999 on elsewhere\n")
    assert main(args) == 0
    assert not (run_copy / ".lock").exists()


def test_a_failed_run_removes_only_its_own_files(synth_dir, tmp_path, monkeypatch, capsys):
    from fishertune.engine import trainer as trainer_module

    original = trainer_module.Trainer._run

    def run_with_a_visitor(self):
        (self.run_dir / "notes.txt").write_text("someone else's file")
        return original(self)

    monkeypatch.setattr(trainer_module.Trainer, "_run", run_with_a_visitor)
    config = tiny_config(synth_dir, train={"warmup_steps": 0, "lr": 1e30, "head_lr": 1e30,
                                           "checkpoint_every": 0})
    run = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out", str(run),
                 "--no-progress"]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert "before the first checkpoint" in line and "without --resume" in line
    assert snapshot(run) == {"notes.txt": b"someone else's file"}


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_before_and_after_the_first_checkpoint(synth_dir, tmp_path):
    long = {"warmup_steps": 1, "steps": 100000, "eval_every": 0, "log_every": 1}
    # before the first checkpoint: the run's files go, and the message says to start again
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, train={**long, "checkpoint_every": 0}))
    run = tmp_path / "run"
    process = subprocess.Popen(cli("train", str(config), "--out", str(run), "--no-progress"), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(run / "log.jsonl", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    err = process.stderr.read().strip().splitlines()
    assert len(err) == 1 and "interrupted by SIGTERM before the first checkpoint" in err[0], err
    assert "run the same command again (without --resume)" in err[0]
    assert not run.exists()
    # after a checkpoint: it is kept, and --resume (with a safe override of the steps) finishes the run
    config = write_config(tmp_path / "d.yaml", tiny_config(synth_dir, train={**long, "checkpoint_every": 1}))
    process = subprocess.Popen(cli("train", str(config), "--out", str(run), "--no-progress"), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(run / "checkpoints" / "latest.json", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    err = process.stderr.read().strip().splitlines()
    assert len(err) == 1 and "the last checkpoint" in err[0] and "--resume" in err[0], err
    step = json.loads((run / "checkpoints" / "latest.json").read_text())["step"]
    result = subprocess.run(cli("train", str(config), "--out", str(run), "--resume", "--no-progress",
                                "--set", f"train.steps={step + 1}"), env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (run / "results.json").is_file()


def test_ctrl_c_exits_130_and_says_what_to_do(synth_dir, tmp_path, monkeypatch, capsys):
    from fishertune.engine import trainer as trainer_module

    original = trainer_module.Trainer.train_step

    def pressed_at_step_1(self, step, batches):
        if step == 1:
            raise KeyboardInterrupt
        return original(self, step, batches)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", pressed_at_step_1)
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, train={"checkpoint_every": 0}))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 128 + signal.SIGINT
    line = one_line(capsys)
    assert "interrupted before the first checkpoint" in line and "without --resume" in line, line
    assert not run.exists()


def test_after_a_nan_stop_resume_with_a_lower_lr_finishes(synth_dir, tmp_path, capsys):
    """The tune phase's lr 1e30 makes the loss NaN at its second step; the checkpoint of the warm-up's end is
    kept, and --resume with a lower train.lr (the message's advice) is accepted and finishes the run."""
    config = tiny_config(synth_dir, train={"warmup_steps": 2, "steps": 2, "lr": 1e30, "checkpoint_every": 2,
                                           "eval_every": 0})
    path = write_config(tmp_path / "c.yaml", config)
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--no-progress"]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert "loss became nan at step 3" in line and "lower train.lr" in line and "step_0000002" in line, line
    assert main(["train", str(path), "--out", str(run), "--resume", "--set", "train.lr=1e-3",
                 "--no-progress"]) == 0
    assert (run / "results.json").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 1e-3


def test_resume_accepts_safe_overrides_and_refuses_the_rest(synth_dir, tmp_path, capsys):
    from fishertune.engine.trainer import lr_factor

    config = tiny_config(synth_dir, train={"warmup_steps": 0, "steps": 4, "lr": 1e-3, "head_lr": 1e-2,
                                           "checkpoint_every": 2, "schedule": "poly"})
    path = write_config(tmp_path / "c.yaml", config)
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    before = snapshot(run)
    refused = ["train", str(path), "--out", str(run), "--resume", "--set", "train.seed=4"]
    assert main(refused) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert "train.seed" in line and "may only change" in line and "train.lr" in line
    assert snapshot(run) == before
    longer = ["--set", "train.steps=6", "--set", "train.lr=2e-3", "--set", "train.head_lr=2e-2",
              "--set", "eval.batch_size=2"]
    assert main(["train", str(path), "--out", str(run), "--resume", *longer, "--no-progress"]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["phase"] == "tune"]
    assert steps == [1, 2, 3, 4, 5, 6]
    factor = lr_factor("poly", 6, 0)  # the continued schedule decays over the new number of steps
    for record in records:
        if record["phase"] == "tune" and record["step"] > 4:  # step s (from 1) used the lr at s - 1
            assert record["lr"] == pytest.approx(2e-3 * factor(record["step"] - 1))
            assert record["head_lr"] == pytest.approx(2e-2 * factor(record["step"] - 1))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["lr"] == 2e-3 and saved["train"]["steps"] == 6 and saved["eval"]["batch_size"] == 2


def test_a_run_whose_evaluation_failed_is_finished_by_resume(run_copy, capsys):
    """Training ended (final checkpoint written) but evaluation crashed: --resume only evaluates, and may
    change the evaluation settings."""
    expected = json.loads((run_copy / "results.json").read_text())["methods"]["full"]["target_miou"]
    for name in ("results.json", "model.safetensors", "tuner"):
        target = run_copy / name
        target.unlink() if target.is_file() else shutil.rmtree(target)
    args = ["train", str(run_copy / "config.yaml"), "--out", str(run_copy), "--resume", "--no-progress",
            "--set", "eval.batch_size=2"]
    assert main(args) == 0
    assert json.loads((run_copy / "results.json").read_text())["methods"]["full"]["target_miou"] == expected
    assert (run_copy / "model.safetensors").is_file() and not (run_copy / ".lock").exists()


# -- 3. validate everything before work starts ---------------------------------------------------------------

BAD_SETTINGS = {
    "eval_batch_size_0": ({"eval": {"batch_size": 0}}, "eval.batch_size must be >= 1, got 0"),
    "log_every_0": ({"train": {"log_every": 0}}, "train.log_every must be >= 1, got 0"),
    "batch_size_0": ({"data": {"batch_size": 0}}, "data.batch_size must be >= 1, got 0"),
    "batch_size_negative": ({"data": {"batch_size": -1}}, "data.batch_size must be >= 1, got -1"),
    "grad_accum_0": ({"train": {"grad_accum": 0}}, "train.grad_accum must be >= 1, got 0"),
    "workers_negative": ({"data": {"workers": -1}}, "data.workers must be >= 0, got -1"),
    "seed_negative": ({"train": {"seed": -1}}, "train.seed must be in [0, 4294967295], got -1"),
    "steps_negative": ({"train": {"steps": -5}}, "train.steps must be >= 0, got -5"),
    "lr_nan": ({"train": {"lr": float("nan")}}, "train.lr must be a finite number"),
    "stride_over_crop": ({"eval": {"mode": "slide", "crop": 16, "stride": 20}}, "eval.stride 20 is larger"),
    "option_type": ({"method": {"name": "fishertune", "options": {"budget": "lots"}}},
                    "method.options.budget must be a number or null, got 'lots'"),
    "option_range": ({"method": {"name": "lora", "options": {"dropout": 1.5}}}, "dropout must be in [0, 1)"),
    "backbone_config_typo": ({"model": {"backbone_config": {"hiden_size": 32}}},
                             "unknown config key 'model.backbone_config.hiden_size' for Dinov2Config "
                             "(did you mean 'model.backbone_config.hidden_size'?)"),
    "max_pixels_0": ({"data": {"max_pixels": 0}}, "data.max_pixels must be >= 1, got 0"),
}


@pytest.mark.parametrize("case", BAD_SETTINGS, ids=str)
def test_bad_settings_are_refused_before_training(case, synth_dir, tmp_path, capsys):
    change, message = BAD_SETTINGS[case]
    assert message in refused_before_training(changed_config(synth_dir, change), tmp_path, capsys)


def test_exponent_numbers_are_numbers(synth_dir, tmp_path):
    from fishertune.engine.config import load_config
    from fishertune.tuners import TUNERS
    from fishertune.tuners.base import make_config

    path = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, method={"name": "fishertune"}))
    config = load_config(path, ["method.options.ratio=5e-2", "train.lr=1E-4"])
    assert config.train.lr == 1e-4
    options = make_config(TUNERS["fishertune"].config_class, config.method.options)
    assert options.ratio == 0.05 and isinstance(options.ratio, float)


@pytest.mark.parametrize("kind", ["out_is_a_file", "json_is_a_folder", "parent_is_a_file"])
def test_unwritable_outputs_are_refused_before_any_work(kind, run_copy, synth_dir, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    before = snapshot(run_copy)
    if kind == "out_is_a_file":
        config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir))
        args = ["train", str(config), "--out", str(blocker)]
        message = f"output folder {blocker} is a file"
    elif kind == "json_is_a_folder":
        args = ["eval", str(run_copy), "--json", str(tmp_path), "--no-progress"]
        message = f"output file {tmp_path} is a folder"
    else:
        args = ["predict", str(run_copy), str(next((synth_dir / "source" / "images").iterdir())),
                "--out", str(blocker / "pred")]
        message = f"cannot create {blocker / 'pred'}: {blocker} is a file"
    assert main(args) == EXIT_BAD_INPUT
    assert message in one_line(capsys)
    assert blocker.read_text() == "a file" and snapshot(run_copy) == before


def test_a_read_only_output_place_is_refused_before_any_work(synth_dir, tmp_path, monkeypatch, capsys):
    """The probe file of the writability check fails as on a read-only mount (injected: the tests may run
    as root, for whom a chmod-ed folder stays writable)."""
    import errno
    import tempfile

    from fishertune import atomic

    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if Path(dir) == read_only:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir))
    assert main(["train", str(config), "--out", str(read_only / "run"), "--no-progress"]) == EXIT_BAD_INPUT
    assert f"cannot write {read_only / 'run'}: {read_only} is not writable (Read-only file system)" in \
        one_line(capsys)
    assert list(read_only.iterdir()) == []


# -- 4. images -----------------------------------------------------------------------------------------------

def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from fishertune.data.image_io import read_image

    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # PIL really reads it as 16-bit
    image = read_image(tmp_path / "deep.png")
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)  # 0, 1, 128, 255
    assert image.shape == (1, 4, 3) and (image == expected[..., None]).all()


def test_exif_orientation_is_applied(tmp_path):
    from fishertune.data.image_io import image_size, read_image

    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)  # the top-left pixel as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "photo.png", exif=exif)
    image = read_image(tmp_path / "photo.png")
    assert image.shape == (3, 2, 3) and image_size(tmp_path / "photo.png") == (3, 2)
    assert (image == np.rot90(pixels, k=-1)).all()  # clockwise quarter turn of the stored pixels


def test_image_size_limit_in_data_check_train_and_predict(run_copy, synth_dir, tmp_path, capsys):
    limit = ["--max-pixels", "1000"]  # the 32 x 32 synthetic images have 1024
    assert main(["data", "check", f"folder:{synth_dir / 'source'}", *limit]) == 1
    out = capsys.readouterr().out
    assert out.count("over the limit of 0.001") == 16  # 8 images and their 8 labels, each named
    assert "images/00000.png is 32x32" in out and "labels/00007.png is 32x32" in out
    image = next((synth_dir / "source" / "images").iterdir())
    assert main(["predict", str(run_copy), str(image), "--out", str(tmp_path / "pred"), *limit]) == 2
    assert f"image {image} is 32x32" in one_line(capsys)
    assert not (tmp_path / "pred").exists()
    config = tiny_config(synth_dir, data={"max_pixels": 1000})
    run = tmp_path / "run2"
    assert main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out", str(run),
                 "--no-progress"]) == 2
    assert "over the limit of 0.001" in one_line(capsys) and not run.exists()


def test_decompression_bomb_is_one_line(run_copy, synth_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses above twice this: 32x32 is a "bomb"
    folder = synth_dir / "source"
    assert main(["data", "check", f"folder:{folder}"]) == 1  # bad files found, not a crash
    out = capsys.readouterr().out
    assert out.count("too large to decode safely") == 16  # 8 images, 8 labels
    assert "images/00003.png is too large" in out
    # predict and train refuse it by name too (status 2: bad input), before writing anything
    image = folder / "images" / "00003.png"
    assert main(["predict", str(run_copy), str(image), "--out", str(tmp_path / "pred")]) == EXIT_BAD_INPUT
    assert f"image {image} is too large to decode safely" in one_line(capsys)
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir))
    assert main(["train", str(config), "--out", str(tmp_path / "new"), "--no-progress"]) == EXIT_BAD_INPUT
    assert "is too large to decode safely" in one_line(capsys)
    assert not (tmp_path / "pred").exists() and not (tmp_path / "new").exists()


# -- 5. NaN and Inf ------------------------------------------------------------------------------------------

class TokenModel(torch.nn.Module):
    """Tokens [B, T, 3] -> embedding (where a perturbation can attach) -> mean -> 2 classes."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(x)).mean(1))


def nan_batches():
    torch.manual_seed(0)
    clean = {"x": torch.randn(4, 2, 3), "y": torch.tensor([0, 1, 0, 1])}
    poisoned = {"x": clean["x"].clone(), "y": clean["y"]}
    poisoned["x"][2, 1, 0] = float("nan")
    return TokenModel(), [clean, poisoned]


def per_sample_ce(model, batch):
    return torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"], reduction="none")


@pytest.mark.parametrize("per_sample", [True, False])
def test_nan_inputs_stop_the_fisher_naming_parameter_and_batch(per_sample):
    from fishertune.sparse import empirical_fisher

    model, batches = nan_batches()
    with pytest.raises(InputError, match=r"Fisher sums of 'embed\.weight' contain NaN .*after batch 1"):
        empirical_fisher(model, batches, per_sample_ce, per_sample=per_sample)


@pytest.mark.parametrize("score", ["fim", "dr_fim"])
def test_selection_never_runs_on_nan(score):
    from fishertune.sparse import MaskSelector, MaskSelectorConfig

    model, batches = nan_batches()
    tuner = MaskSelector(model, MaskSelectorConfig(ratio=0.5, score=score, perturb_layers=["embed"]))
    with pytest.raises(InputError, match="contain NaN"):
        tuner.estimate(batches, per_sample_ce)
    assert not tuner.masks


def test_selection_refuses_infinite_scores():
    from fishertune.sparse import select_topk

    with pytest.raises(InputError, match="scores of 'b' contain an infinite value"):
        select_topk({"a": torch.ones(3), "b": torch.tensor([1.0, float("inf")])}, count=2)


# -- 6. deltas and weights -----------------------------------------------------------------------------------

def test_a_crafted_delta_changes_nothing(tmp_path):
    from safetensors.torch import save_file
    from torch import nn

    from fishertune.sparse.delta import load_delta, save_delta

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    tuned = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    tuned.load_state_dict(base.state_dict())
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in base.named_parameters()}
    masks["0.weight"][0, :2] = True
    masks["1.weight"][1, 1] = True
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            p[masks[name]] += 1.0
    good = tmp_path / "good.safetensors"
    save_delta(tuned, dict(base.state_dict()), masks, good)
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors["1.weight.indices"] = torch.tensor([99])  # the second tensor points outside its parameter
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    before = {n: p.clone() for n, p in base.state_dict().items()}
    with pytest.raises(InputError, match=r"tensor '1\.weight': indices outside 0\.\.7"):
        load_delta(base, bad)
    assert all(torch.equal(before[n], p) for n, p in base.state_dict().items())  # the first is untouched too
    load_delta(base, good)
    assert all(torch.equal(p, tuned.state_dict()[n]) for n, p in base.state_dict().items())


def test_pickled_weights_are_refused(synth_dir, tmp_path, capsys):
    from cli_helpers import TINY_BACKBONE
    from transformers import Dinov2Config, Dinov2Model

    folder = tmp_path / "weights"
    folder.mkdir()
    model = Dinov2Model(Dinov2Config(**TINY_BACKBONE))
    model.config.to_json_file(folder / "config.json")
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # a pickle, as older checkpoints ship
    config = tiny_config(synth_dir, model={"weights": str(folder)})
    run = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out", str(run),
                 "--no-progress"]) == 2
    assert "holds no .safetensors weights" in one_line(capsys) and not run.exists()


def test_allowed_pickled_weights_load_tensors_only(synth_dir, tmp_path, monkeypatch, capsys):
    """With FISHERTUNE_ALLOW_TORCH_WEIGHTS=1 a .bin of tensors loads; a pickle that would run code is
    refused by torch.load(weights_only=True) and nothing in it runs."""
    import pickle

    from cli_helpers import TINY_BACKBONE
    from transformers import Dinov2Config, Dinov2Model

    from fishertune.models.backbones import ALLOW_TORCH_WEIGHTS, load_hf_model

    monkeypatch.setenv(ALLOW_TORCH_WEIGHTS, "1")
    model = Dinov2Model(Dinov2Config(**TINY_BACKBONE))
    good, evil = tmp_path / "good", tmp_path / "evil"
    for folder in (good, evil):
        folder.mkdir()
        model.config.to_json_file(folder / "config.json")
    torch.save(model.state_dict(), good / "pytorch_model.bin")
    loaded = load_hf_model(Dinov2Config, Dinov2Model, str(good), {}).state_dict()
    assert all(torch.equal(value, loaded[name]) for name, value in model.state_dict().items())
    marker = tmp_path / "code_ran"

    class RunsCode:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (evil / "pytorch_model.bin").write_bytes(pickle.dumps({"embeddings.cls_token": RunsCode()}, protocol=2))
    config = tiny_config(synth_dir, model={"weights": str(evil)})
    run = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "c.yaml", config)), "--out", str(run),
                 "--no-progress"]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert "holds more than tensors, which torch.load(weights_only=True) refuses" in line
    assert str(evil) in line
    assert not marker.exists() and not run.exists()


# -- 7. synth never overwrites silently ----------------------------------------------------------------------

def test_synth_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    args = ["synth", "--out", str(out), "--n", "1", "--size", "16", "--domains", "source"]
    assert main(args) == 2
    assert "is not empty; pass --overwrite" in one_line(capsys)
    assert snapshot(out) == {"mine.txt": b"keep"}
    assert main([*args, "--overwrite"]) == 0
    assert (out / "source" / "images" / "00000.png").is_file() and (out / "mine.txt").read_text() == "keep"


# -- 8. the demo validates a reused record before writing anything -----------------------------------------

DEMO = ["--methods", "frozen", "--backbone", "backbones/tiny.yaml", "--images", "4", "--size", "32",
        "--no-progress", "--set", "train.steps=1", "--set", "train.warmup_steps=1"]
RECORD = {"config": {}, "selection": None, "arrays": {"file": "seed1.npz", "sha256": "0" * 64},
          "entry": {"trainable_params": 0, "source_miou": 1.0, "target_miou": {"fog": 2.0},
                    "mean_target_miou": 2.0, "train_seconds": 1.0}}
DAMAGED_RECORDS = {
    "truncated": (json.dumps(RECORD)[:40], "is not readable JSON"),
    "no_arrays": (json.dumps({k: v for k, v in RECORD.items() if k != "arrays"}), "must hold config"),
    "arrays_outside": (json.dumps({**RECORD, "arrays": {"file": "../x.npz", "sha256": "0"}}), "arrays must"),
    "entry_not_a_dict": (json.dumps({**RECORD, "entry": 5}), "entry must hold"),
    "target_miou_not_a_mapping": (json.dumps({**RECORD, "entry": {**RECORD["entry"], "target_miou": "x"}}),
                                  "entry must hold target_miou"),
}


def test_a_damaged_demo_record_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "demo"
    record = out / "records" / "frozen" / "seed1.json"  # the quick demo's record of frozen (seed 1)
    record.parent.mkdir(parents=True)
    (out / "results.json").write_text('{"methods": {}}')  # an earlier demo's results
    for case, (text, message) in DAMAGED_RECORDS.items():
        record.write_text(text)
        before = snapshot(out / "records") | {"results.json": (out / "results.json").read_bytes()}
        assert main(["demo", "--out", str(out), *DEMO]) == EXIT_BAD_INPUT, case
        line = one_line(capsys)
        assert f"demo record {record} " in line and message in line, (case, line)
        assert snapshot(out / "records") | {"results.json": (out / "results.json").read_bytes()} == before
        assert not (out / "runs").exists(), case  # refused before training


# -- 9. smaller ones -----------------------------------------------------------------------------------------

def test_foggy_zurich_list_cannot_leave_its_root(tmp_path, capsys):
    root = tmp_path / "foggy"
    (root / "lists_file_names").mkdir(parents=True)
    (root / "lists_file_names" / "RGB_testv2_filenames.txt").write_text("../../etc/passwd\n")
    assert main(["data", "check", f"foggy_zurich:{root}"]) == 2
    assert "which is outside" in one_line(capsys)


# -- nothing of the user's is overwritten or deleted (issue 25) ----------------------------------------------

@pytest.mark.parametrize("target", ["model.safetensors", "results.json", "config.yaml", "label"])
def test_eval_json_never_replaces_an_input(target, run_copy, synth_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_dir / "source", data)
    victim = (data / "labels" / sorted(p.name for p in (data / "labels").iterdir())[0]) if target == "label" \
        else run_copy / target
    before, run_before = victim.read_bytes(), snapshot(run_copy)
    args = ["eval", str(run_copy), "--data", f"folder:{data}", "--json", str(victim), "--no-progress"]
    assert main(args) == EXIT_BAD_INPUT
    assert "is not an earlier `fishertune eval` result" in one_line(capsys)
    assert victim.read_bytes() == before and snapshot(run_copy) == run_before


def test_eval_json_replaces_an_earlier_eval_result(run_copy, synth_dir, tmp_path):
    out = run_copy / "eval.json"
    for _ in range(2):  # the second call replaces the first's result: the usual way to re-evaluate
        assert main(["eval", str(run_copy), "--data", f"folder:{synth_dir / 'source'}", "--json", str(out),
                     "--no-progress"]) == 0
    assert "target_miou" in json.loads(out.read_text())


def test_predict_never_writes_through_a_symlink_onto_an_input_or_beside_inputs(run_copy, synth_dir,
                                                                                tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    image = photos / "a.jpg"
    Image.open(next((synth_dir / "source" / "images").iterdir())).convert("RGB").save(image)
    (photos / "a.png").write_bytes(b"the user's own photo")
    args = ["predict", str(run_copy), str(image), "--out", str(photos), "--no-progress"]
    assert main(args) == EXIT_BAD_INPUT
    assert "a file among the inputs' own files" in one_line(capsys)
    assert (photos / "a.png").read_bytes() == b"the user's own photo"
    png = photos / "b.png"  # an input reached through a symlink named as its output would be
    shutil.copyfile(next((synth_dir / "source" / "images").iterdir()), png)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.png").symlink_to(png)
    before = png.read_bytes()
    assert main(["predict", str(run_copy), str(png), "--out", str(out), "--no-progress"]) == EXIT_BAD_INPUT
    assert "would overwrite the input" in one_line(capsys)
    assert png.read_bytes() == before


def test_export_never_deletes_a_folder_it_did_not_make(run_copy, tmp_path):
    mine = tmp_path / ".ex.tmp"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["export", str(run_copy), "--out", str(tmp_path / "ex")]) == 0
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ex.tmp", "ex", "run"]  # no temporary left


@pytest.mark.parametrize("args", [
    ["synth", "--out", "{tmp}/s", "--n", "0"], ["synth", "--out", "{tmp}/s", "--size", "0"],
    ["synth", "--out", "{tmp}/s", "--domains", ","],
    ["demo", "--out", "{tmp}/d", "--images", "0"], ["demo", "--out", "{tmp}/d", "--size", "0"],
    ["eval", "{run}", "--mode", "slide", "--crop", "0"], ["predict", "{run}", "x.png", "--out", "{tmp}/p",
                                                          "--stride", "0"]])
def test_zero_is_a_value_never_not_given(args, run_copy, tmp_path, capsys):
    """0 images, 0 pixels, a 0-pixel window or no domain at all: refused, never replaced by a default."""
    argv = [a.format(tmp=tmp_path, run=run_copy) for a in args]
    with pytest.raises(SystemExit) as stop:  # argparse's own refusal for a number below 1
        code = main(argv)
        raise SystemExit(code)
    assert stop.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert ("at least 1, got 0" in err or "names no domain" in err) and "Traceback" not in err
    assert not (tmp_path / "s").exists() and not (tmp_path / "d").exists() and not (tmp_path / "p").exists()


def test_eval_on_labels_that_are_all_ignore_is_refused_not_nan(run_copy, synth_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_dir / "source", data)
    for label in (data / "labels").iterdir():
        size = Image.open(label).size
        Image.fromarray(np.full(size[::-1], 255, dtype=np.uint8)).save(label)
    out = tmp_path / "eval.json"
    args = ["eval", str(run_copy), "--data", f"folder:{data}", "--json", str(out), "--no-progress"]
    assert main(args) == EXIT_BAD_INPUT
    assert "every label pixel is 255 (ignore); there is nothing to score" in one_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(("seeds", "message"), [("1,1", "names seed 1 more than once"),
                                                ("1,-2", "must be in [0, 2^32)")])
def test_demo_seeds_are_checked_before_any_training(seeds, message, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--full", "--seeds", seeds, "--no-progress"]) == \
        EXIT_BAD_INPUT
    assert message in one_line(capsys)
    assert not (tmp_path / "d").exists()
