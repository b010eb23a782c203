"""`fishertune demo` end to end on a tiny random backbone and tiny synthetic data."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from fishertune.cli.main import main
from fishertune.engine.config import load_config
from fishertune.engine.trainer import train
from fishertune.tuners import load_selection

TINY = ["--backbone", "backbones/tiny.yaml", "--images", "8", "--size", "32", "--no-progress",
        "--set", "train.steps=4", "--set", "train.warmup_steps=2", "--set", "data.crop=28",
        "--set", "data.batch_size=4"]
FIELDS = {"trainable_params", "source_miou", "target_miou", "mean_target_miou", "train_seconds"}
TARGETS = {"photo", "fog", "night", "rain", "snow", "shift"}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--methods", "frozen,full,fishertune", *TINY]) == 0
    return out


def test_results_follow_the_contract(demo_dir):
    results = json.loads((demo_dir / "results.json").read_text())
    assert set(results["methods"]) == {"frozen", "full", "fishertune"}
    for name, entry in results["methods"].items():
        assert set(entry) >= FIELDS, name
        assert set(entry["target_miou"]) == TARGETS
        assert entry["mean_target_miou"] == pytest.approx(sum(entry["target_miou"].values()) / len(TARGETS))
        assert all(0 <= v <= 100 for v in entry["target_miou"].values())
    assert results["methods"]["frozen"]["trainable_params"] == 0
    full = results["methods"]["full"]["trainable_params"]
    assert 0 < results["methods"]["fishertune"]["trainable_params"] < full


def test_every_run_folder_holds_a_model_and_frozen_keeps_the_backbone(demo_dir):
    frozen = load_file(demo_dir / "runs" / "frozen" / "model.safetensors")
    full = load_file(demo_dir / "runs" / "full" / "model.safetensors")
    backbone = [k for k in frozen if k.startswith("backbone.")]
    assert backbone
    # same seed, same base: the frozen run's backbone is the untouched initialisation; full moved it
    assert any(not (frozen[k] == full[k]).all() for k in backbone)
    assert (demo_dir / "runs" / "fishertune" / "tuner" / "delta.safetensors").is_file()


def test_report_links_existing_figures(demo_dir):
    report = (demo_dir / "report.md").read_text()
    links = [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert {Path(link).name for link in links} == {"miou.png", "dr_fim_heatmap.png", "selection.png",
                                                   "growth.png", "predictions.png"}
    for link in links:
        assert (demo_dir / link).stat().st_size > 1000
    assert "| frozen |" in report and "| fishertune |" in report


def test_rerun_reuses_finished_runs(demo_dir, capsys):
    before = (demo_dir / "runs" / "full" / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "--out", str(demo_dir), "--methods", "frozen,full,fishertune", *TINY]) == 0
    assert (demo_dir / "runs" / "full" / "model.safetensors").stat().st_mtime_ns == before
    assert "[demo] full:" not in capsys.readouterr().out  # nothing was trained again


def test_unknown_method_is_one_clear_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--methods", "frozen,fishtune", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown demo method 'fishtune'") and "Traceback" not in err


def test_full_mode_chooses_on_source_val_and_its_seed0_run_is_the_sweep_winner(tmp_path):
    out = tmp_path / "full"
    assert main(["demo", "--full", "--out", str(out), "--methods", "full", "--seeds", "0,1", *TINY]) == 0
    hparams = yaml.safe_load((out / "hparams.yaml").read_text())["full"]
    scores = {float(k): v for k, v in hparams["source_val_miou"].items()}
    assert len(scores) >= 3 and hparams["lr"] == max(scores, key=lambda lr: (scores[lr], -lr))
    for sweep in (out / "sweep" / "full").iterdir():  # the sweep never evaluated a target domain
        (entry,) = json.loads((sweep / "results.json").read_text())["methods"].values()
        assert entry["target_miou"] == {}
    # independent check: seed 1's config (targets included) trained with seed 0 gives the seed-0 entry
    config = load_config(out / "runs" / "full" / "seed1" / "config.yaml")
    assert config.train.lr == hparams["lr"] and config.data.targets
    config.train.seed = 0
    retrained = train(config, tmp_path / "retrained", progress=False)
    seed0, seed1 = json.loads((out / "results.json").read_text())["methods"]["full"]["seeds"]
    assert seed0["source_miou"] == pytest.approx(retrained["source_miou"], abs=1e-9)
    assert seed0["target_miou"] == pytest.approx(retrained["target_miou"], abs=1e-9)
    assert seed1["seed"] == 1 and seed1["target_miou"] != seed0["target_miou"]


def test_a_run_killed_before_its_first_checkpoint_is_started_again(tmp_path, capsys):
    out, args = tmp_path / "d", ["demo", "--out", str(tmp_path / "d"), "--methods", "frozen", *TINY]
    assert main(args) == 0
    run = out / "runs" / "frozen"
    first = json.loads((run / "results.json").read_text())["methods"]["frozen"]
    for path in ("checkpoints", "model.safetensors", "results.json"):  # what a kill at step 1 leaves
        shutil.rmtree(run / path) if (run / path).is_dir() else (run / path).unlink()
    assert main(args) == 0
    again = json.loads((run / "results.json").read_text())["methods"]["frozen"]
    assert {**again, "train_seconds": 0} == {**first, "train_seconds": 0}
    shutil.rmtree(run / "checkpoints")
    (run / "results.json").unlink()
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("seed: 0", "seed: 5"))
    capsys.readouterr()
    assert main(args) == 2  # a folder of another config is never deleted
    assert "holds neither a run of this config nor a checkpoint" in capsys.readouterr().err
    assert (run / "model.safetensors").is_file()


def test_report_states_how_much_the_selections_overlap(tmp_path):
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--methods", "fishertune,random-select", *TINY]) == 0
    a, b = (load_selection(out / "runs" / v / "tuner")["masks"] for v in ("fishertune", "random-select"))
    a, b = ({n: m.reshape(-1) for n, m in s.items()} for s in (a, b))
    both = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    assert 0 < both < union
    assert f"random-select {100 * both / union:.1f}%" in (out / "report.md").read_text()
