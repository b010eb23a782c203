"""Hostile input, round 3 (issue 25): config values refused before the model is built, outputs that are
links or no new folder refused before any work, every predict input decoded before the first output, a
full disk named by the file being written, and a signal after the result is complete. Each case asserts
the exit status, one line naming the problem, no traceback, and nothing of the user's lost or
half-written."""

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import changed_config, one_line, refused_before_training, snapshot, tiny_config, write_config
from PIL import Image

from fishertune.cli.main import main
from fishertune.errors import EXIT_BAD_INPUT

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
DISK_FULL = "No space left on device"


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if any backbone is built: the refusal must come before the work."""
    import fishertune.models

    def build_backbone(*args, **kwargs):
        raise AssertionError("a model was built before the refusal")

    monkeypatch.setattr(fishertune.models, "build_backbone", build_backbone)


# -- every config value before the model is built ------------------------------------------------------------

TINY_M2F = {"hidden_dim": 16, "num_queries": 8, "num_layers": 1, "ffn_dim": 32}
BAD_VALUES = {
    "num_classes_twice": ({"model": {"head_options": {"num_classes": 5}}},
                          "model.head_options.num_classes cannot be set: the run sets it from data.classes"),
    "in_channels": ({"model": {"head_options": {"in_channels": 8}}},
                    "model.head_options.in_channels cannot be set"),
    "num_levels": ({"model": {"head_options": {"num_levels": 2}}},
                   "model.head_options.num_levels cannot be set"),
    "channels_0": ({"model": {"head": "multilevel", "head_options": {"channels": 0}}},
                   "model.head_options.channels must be a whole number >= 1, got 0"),
    "channels_string": ({"model": {"head": "multilevel", "head_options": {"channels": "16"}}},
                        "model.head_options.channels must be an integer, got '16'"),
    "dropout_2": ({"model": {"head": "multilevel", "head_options": {"channels": 16, "dropout": 2}}},
                  "model.head_options.dropout must be in [0, 1), got 2"),
    "scales_not_numbers": ({"model": {"head": "multilevel", "head_options": {"scales": [4, "x"]}}},
                           "model.head_options.scales[1] must be a number, got 'x'"),
    "heads_do_not_divide": ({"model": {"head": "mask2former", "head_options": {**TINY_M2F, "num_heads": 3}}},
                            "model.head_options: hidden_dim 16 is not divisible by num_heads 3"),
    "queries_0": ({"model": {"head": "mask2former", "head_options": {**TINY_M2F, "num_heads": 2,
                                                                      "num_queries": 0}}},
                  "model.head_options.num_queries must be a whole number >= 1, got 0"),
    "negative_weight": ({"model": {"head": "mask2former", "head_options": {**TINY_M2F, "num_heads": 2,
                                                                            "class_weight": -1}}},
                        "model.head_options.class_weight must be >= 0, got -1"),
    "supervision_string": ({"model": {"head": "mask2former", "head_options": {
                               **TINY_M2F, "num_heads": 2, "deep_supervision": "yes"}}},
                           "model.head_options.deep_supervision must be true or false, got 'yes'"),
    "crop_100000": ({"data": {"crop": 100000}},
                    "data.crop 100000 is too large: a 100000x100000 crop has 10000 megapixels, over the "
                    "image size limit of 50 (data.max_pixels); use a smaller crop"),
    "eval_crop_100000": ({"eval": {"mode": "slide", "crop": 100000}}, "eval.crop 100000 is too large"),
    "crop_over_own_limit": ({"data": {"crop": 40, "max_pixels": 1500}},
                            "data.crop 40 is too large: a 40x40 crop has 0.0016 megapixels, over the image "
                            "size limit of 0.0015"),
}


@pytest.mark.parametrize("case", BAD_VALUES, ids=str)
def test_config_values_are_refused_before_the_model_is_built(case, synth_dir, tmp_path, no_model, capsys):
    change, message = BAD_VALUES[case]
    assert message in refused_before_training(changed_config(synth_dir, change), tmp_path, capsys)


def test_head_options_are_checked_in_the_api_too():
    from fishertune.errors import InputError
    from fishertune.models import build_segmentor

    with pytest.raises(InputError, match="model.head_options.num_classes cannot be set"):
        build_segmentor("dinov2", {"name": "linear", "num_classes": 3}, num_classes=19)


def test_valid_head_options_still_build(synth_dir):
    from fishertune.engine.build import build_base
    from fishertune.engine.config import config_from_dict

    options = {"channels": 16, "dropout": 0, "scales": [4, 2, 1, 0.5]}  # an int where a float is expected
    config = tiny_config(synth_dir, model={"head": "multilevel", "head_options": options})
    model = build_base(config_from_dict(config))
    assert model.head.classifier.out_channels == 19


@pytest.mark.parametrize("message", [
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 120000000000 bytes. Error code 12 (Cannot allocate memory)",
    "[enforce fail at C:\\c10\\core\\impl\\alloc_cpu.cpp:72] data. DefaultCPUAllocator: not enough memory: "
    "you tried to allocate 120000000000 bytes."])
def test_a_failed_allocation_is_out_of_memory(message, synth_dir, tmp_path, monkeypatch, capsys):
    """A size whose allocation fails (within the crop limit, on a small machine) is one line, not a bug."""
    from fishertune.engine import trainer as trainer_module

    def allocate(self, step, batches):
        raise RuntimeError(message)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", allocate)
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, train={"checkpoint_every": 0}))
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == EXIT_BAD_INPUT
    assert one_line(capsys) == ("error: out of memory (tried to allocate 120 GB); lower data.batch_size, "
                                "data.crop or eval.batch_size")
    assert not run.exists()


# -- outputs: no links, no "." for a folder written whole, all checked before any work -----------------------

OUTPUTS = {  # (command line, the output that is made a link); {run}, {image}, {config}, {out} filled in
    "train": (["train", "{config}", "--no-progress", "--out", "{out}"]),
    "fisher": (["fisher", "{config}", "--no-progress", "--out", "{out}"]),
    "export": (["export", "{run}", "--out", "{out}"]),
    "predict": (["predict", "{run}", "{image}", "--no-progress", "--out", "{out}"]),
    "eval_json": (["eval", "{run}", "--no-progress", "--json", "{out}"]),
    "onnx": (["export", "{run}", "--onnx", "{out}"]),
    "demo": (["demo", "--methods", "frozen", "--no-progress", "--out", "{out}"]),
    "synth": (["synth", "--n", "1", "--size", "16", "--domains", "source", "--out", "{out}"]),
}


@pytest.mark.parametrize("dangling", [False, True], ids=["link", "dangling_link"])
@pytest.mark.parametrize("command", OUTPUTS, ids=str)
def test_an_output_that_is_a_link_is_refused_before_any_work(command, dangling, finished_run, synth_dir,
                                                              tmp_path, no_model, capsys):
    target = tmp_path / ("nowhere" if dangling else "real")
    if not dangling:
        target.mkdir()
        (target / "mine.txt").write_text("keep")
    link = tmp_path / ("out.onnx" if command == "onnx" else "out")
    link.symlink_to(target)
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir))
    image = next((synth_dir / "source" / "images").iterdir())
    args = [a.format(run=finished_run, image=image, config=config, out=link) for a in OUTPUTS[command]]
    assert main(args) == EXIT_BAD_INPUT
    assert f"output {link} is a symbolic link (to {target})" in one_line(capsys)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert not target.exists() if dangling else snapshot(target) == {"mine.txt": b"keep"}


@pytest.mark.parametrize("kind", ["onnx_folder", "export_dot", "export_dotdot", "fisher_dot", "export_both"])
def test_outputs_that_cannot_be_a_result_are_refused_before_any_work(kind, finished_run, synth_dir, tmp_path,
                                                                      monkeypatch, no_model, capsys):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir))
    if kind == "onnx_folder":
        args = ["export", str(finished_run), "--onnx", str(folder)]
        message = f"output file {folder} is a folder"
    elif kind == "export_dot":
        monkeypatch.chdir(empty)  # even an empty current folder: the export is a folder renamed into place
        args, message = ["export", str(finished_run), "--out", "."], "--out . names the current folder"
    elif kind == "export_dotdot":
        args, message = ["export", str(finished_run), "--out", "empty/.."], "--out empty/.. names the current"
    elif kind == "fisher_dot":
        monkeypatch.chdir(empty)
        args, message = ["fisher", str(config), "--out", "."], "--out . names the current folder"
    else:  # a good --out, a bad --onnx: neither is written
        args, message = ["export", str(finished_run), "--out", "ex", "--onnx", str(folder)], "is a folder"
    before = snapshot(tmp_path)
    assert main(args) == EXIT_BAD_INPUT
    assert message in one_line(capsys)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == \
        ["c.yaml", "empty", "model.onnx"] and not any(empty.iterdir())


def test_export_without_onnxruntime_writes_nothing_so_a_rerun_is_not_blocked(finished_run, tmp_path,
                                                                              monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    out, onnx = tmp_path / "ex", tmp_path / "m.onnx"
    args = ["export", str(finished_run), "--out", str(out), "--onnx", str(onnx)]
    assert main(args) == EXIT_BAD_INPUT
    assert "ONNX export needs onnx and onnxruntime" in one_line(capsys)
    assert list(tmp_path.iterdir()) == []
    assert main(["export", str(finished_run), "--out", str(out)]) == 0  # the rerun without --onnx works
    assert (out / "export.json").is_file()


# -- predict decodes every input before writing anything -----------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated_jpeg", "truncated_png", "not_an_image"])
def test_predict_checks_every_input_before_the_first_output(damage, finished_run, synth_dir, tmp_path,
                                                             capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    source = Image.open(next((synth_dir / "source" / "images").iterdir())).convert("RGB")
    good = [photos / f"{i}.jpg" for i in range(3)]
    for path in good:
        source.save(path)
    bad = photos / ("z.png" if damage == "truncated_png" else "z.jpg")
    if damage == "not_an_image":
        bad.write_bytes(b"not an image at all")
    else:
        source.resize((64, 64)).save(bad)
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])  # the header is intact: only decoding finds it
    out = tmp_path / "out"
    args = ["predict", str(finished_run), *map(str, good), str(bad), "--out", str(out), "--no-progress"]
    assert main(args) == EXIT_BAD_INPUT
    assert f"cannot read image {bad}" in one_line(capsys)
    assert not out.exists()


# -- a full disk is named by the file being written ----------------------------------------------------------

def full_disk_safetensors(monkeypatch, when=lambda path: True):
    """safetensors' save_file fails as on a full disk (its own error class and wording) for paths `when`
    accepts."""
    import safetensors.torch
    from safetensors import SafetensorError

    real = safetensors.torch.save_file

    def save_file(tensors, path, metadata=None):
        if when(Path(path)):
            raise SafetensorError(f"Error while serializing: I/O error: {DISK_FULL} (os error 28) at path "
                                  f'"{path}"')
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def test_a_full_disk_during_training_names_the_checkpoint_file(synth_dir, tmp_path, monkeypatch, capsys):
    full_disk_safetensors(monkeypatch)
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, train={"checkpoint_every": 0}))
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    written = run / "checkpoints" / "step_0000006" / "model.safetensors"
    assert line.startswith(f"error: cannot write {written}: {DISK_FULL} before the first checkpoint; the "
                           f"files of this run were removed"), line
    assert "invalid safetensors" not in line and not run.exists()


def test_a_full_disk_after_a_checkpoint_names_the_file_and_keeps_the_checkpoint(synth_dir, tmp_path,
                                                                                 monkeypatch, capsys):
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.startswith(".results.json."):  # the temporary file of results.json
            raise OSError(errno.ENOSPC, DISK_FULL)  # a failed write() names no file
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, train={"checkpoint_every": 0}))
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert line.startswith(f"error: cannot write {run / 'results.json'}: {DISK_FULL}; the last "
                           f"checkpoint"), line
    assert "--resume" in line and (run / "checkpoints" / "step_0000006" / "model.safetensors").is_file()
    assert not [p for p in run.iterdir() if p.name.startswith(".results.json.")]  # no temporary left


def test_a_full_disk_in_fisher_names_the_output_and_leaves_nothing(synth_dir, tmp_path, monkeypatch, capsys):
    full_disk_safetensors(monkeypatch, when=lambda path: path.name.startswith(".scores.safetensors."))
    out = tmp_path / "fisher"
    config = write_config(tmp_path / "c.yaml", tiny_config(synth_dir, method={"name": "fishertune"}))
    assert main(["fisher", str(config), "--out", str(out), "--no-progress"]) == EXIT_BAD_INPUT
    assert one_line(capsys) == (f"error: cannot write {out / 'scores.safetensors'}: {DISK_FULL} (free some "
                                f"space, or write elsewhere)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no output, no temporary folder


@pytest.mark.parametrize("where", ["copy", "head"])
def test_a_full_disk_in_export_names_the_export_file_not_a_source(where, finished_run, tmp_path, monkeypatch,
                                                                  capsys):
    from fishertune.engine import export as export_module

    if where == "copy":
        def copyfile(source, destination):  # as shutil reports ENOSPC: (source, destination)
            raise OSError(errno.ENOSPC, DISK_FULL, str(source), None, str(destination))

        monkeypatch.setattr(export_module.shutil, "copyfile", copyfile)
        written = "tuner/tuner_config.json"
    else:
        full_disk_safetensors(monkeypatch)
        written = "head.safetensors"
    out = tmp_path / "ex"
    before = snapshot(finished_run)
    assert main(["export", str(finished_run), "--out", str(out)]) == EXIT_BAD_INPUT
    line = one_line(capsys)
    assert line.startswith(f"error: cannot write {out / written}: {DISK_FULL}"), line
    assert str(finished_run) not in line
    assert list(tmp_path.iterdir()) == [] and snapshot(finished_run) == before


def test_a_full_disk_is_named_by_the_atomic_writers(tmp_path):
    from fishertune.atomic import save_tensors, write_atomic

    def fails(temp):
        Path(temp).write_bytes(b"half")
        raise OSError(errno.ENOSPC, DISK_FULL)

    with pytest.raises(OSError) as raised:
        write_atomic(tmp_path / "a.json", fails)
    assert raised.value.filename == str(tmp_path / "a.json") and raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    import torch

    save_tensors(tmp_path / "ok.safetensors", {"t": torch.zeros(2)})  # an ordinary write is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ok.safetensors"]


# -- a signal after the result is complete -------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_after_the_export_is_complete_exits_0_with_one_note(signum, finished_run, tmp_path,
                                                                     monkeypatch, capsys):
    from fishertune.cli import commands

    real = commands.result_complete

    def complete_then_signal():
        real()
        os.kill(os.getpid(), signum)  # arrives while the command prints its summary

    monkeypatch.setattr(commands, "result_complete", complete_then_signal)
    out = tmp_path / "ex"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    assert main(["export", str(finished_run), "--out", str(out)]) == 0
    assert one_line(capsys, "note: ") == \
        f"note: {signal.Signals(signum).name} arrived after the command finished; its result is complete"
    assert (out / "export.json").is_file() and (out / "head.safetensors").is_file()
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the caller's handlers are back


def test_a_signal_while_the_program_shuts_down_keeps_exit_0(finished_run, tmp_path):
    """The `fishertune` program after its result is written: a SIGTERM during the interpreter's shutdown
    (here: a slow one) gives the command's own status and one line, not a silent 143."""
    out = tmp_path / "ex"
    script = ("import os, signal, sys, time\n"
              "from fishertune.cli.main import main\n"
              f"sys.argv = ['fishertune', 'export', {str(finished_run)!r}, '--out', {str(out)!r}]\n"
              "status = main()\n"
              "os.kill(os.getpid(), signal.SIGTERM)\n"
              "time.sleep(30)\n"
              "sys.exit(status)\n")
    result = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "note: SIGTERM arrived after the command finished; its result is complete"]
    assert (out / "export.json").is_file() and "wrote" in result.stdout
    shutil.rmtree(out)


@pytest.mark.parametrize("damage", ["nan", "float64"])
def test_a_damaged_model_of_a_finished_run_is_refused_in_one_line(damage, finished_run, synth_dir, tmp_path,
                                                                   capsys):
    """eval/predict/export load a finished run's model whole: a NaN or a changed dtype would otherwise be
    evaluated (or cast) silently."""
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    state = load_file(str(run / "model.safetensors"))
    name = next(n for n, t in state.items() if t.is_floating_point())
    state[name] = state[name].double() if damage == "float64" else state[name].fill_(float("nan"))
    save_file(state, str(run / "model.safetensors"))
    assert main(["eval", str(run), "--data", f"folder:{synth_dir / 'eval' / 'fog'}", "--no-progress"]) == 2
    line = one_line(capsys)
    assert "model.safetensors" in line and name in line
    assert ("NaN" in line) if damage == "nan" else ("float64" in line)


def test_a_truncated_model_is_named_by_every_command_that_loads_it(finished_run, synth_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    for command in (["eval", str(run), "--data", f"folder:{synth_dir / 'eval' / 'fog'}", "--no-progress"],
                    ["export", str(run), "--out", str(tmp_path / "export")]):
        assert main(command) == 2
        line = one_line(capsys)
        assert line.startswith(f"error: cannot read model weights {weights}: "), line
    assert not (tmp_path / "export").exists()
