"""`fishertune demo` end to end on a tiny random backbone and tiny synthetic data."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from fishertune.benchmark.records import read_record, record_path
from fishertune.cli.main import main
from fishertune.engine.build import build_base
from fishertune.engine.config import PACKAGED_CONFIGS, load_config
from fishertune.engine.evaluator import PER_IMAGE_FILE
from fishertune.tuners import build_tuner, load_selection
from fishertune.tuners.fishertune import FisherTuneTunerConfig

TINY = ["--backbone", "backbones/tiny.yaml", "--images", "8", "--size", "32", "--no-progress",
        "--set", "train.steps=4", "--set", "train.warmup_steps=2", "--set", "data.crop=28",
        "--set", "data.batch_size=4"]
FIELDS = {"trainable_params", "source_miou", "target_miou", "mean_target_miou", "train_seconds"}
TARGETS = {"photo", "fog", "night", "rain", "snow", "shift"}
QUICK = ["frozen", "full", "fishertune", "random-select"]
FIGURES = {"miou.png", "dr_fim_heatmap.png", "selection.png", "growth.png", "predictions.png"}


def demo(out, methods, *extra):
    return main(["demo", "--out", str(out), "--methods", ",".join(methods), *extra, *TINY])


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert demo(out, QUICK) == 0
    return out


def record_of(out, variant, key="seed1"):
    config = load_config(out / "runs" / variant / "config.yaml")
    return read_record(out, variant, key, config.to_dict())


@pytest.mark.slow
def test_results_follow_the_contract_with_seed_1(demo_dir):
    results = json.loads((demo_dir / "results.json").read_text())
    assert list(results["methods"]) == QUICK
    for name, entry in results["methods"].items():
        assert set(entry) >= FIELDS, name
        assert set(entry["target_miou"]) == TARGETS
        assert entry["mean_target_miou"] == pytest.approx(sum(entry["target_miou"].values()) / len(TARGETS))
        assert all(0 <= v <= 100 for v in entry["target_miou"].values())
        assert [s["seed"] for s in entry["seeds"]] == [1]  # quick mode reports seed 1, not the sweep seed
        assert load_config(demo_dir / "runs" / name / "config.yaml").train.seed == 1
    assert results["methods"]["frozen"]["trainable_params"] == 0
    full = results["methods"]["full"]["trainable_params"]
    assert 0 < results["methods"]["fishertune"]["trainable_params"] < full


@pytest.mark.slow
def test_every_run_folder_holds_a_model_and_frozen_keeps_the_backbone(demo_dir):
    frozen = load_file(demo_dir / "runs" / "frozen" / "model.safetensors")
    full = load_file(demo_dir / "runs" / "full" / "model.safetensors")
    backbone = [k for k in frozen if k.startswith("backbone.")]
    assert backbone
    # same seed, same base: the frozen run's backbone is the untouched initialisation; full moved it
    assert any(not (frozen[k] == full[k]).all() for k in backbone)
    assert (demo_dir / "runs" / "fishertune" / "tuner" / "delta.safetensors").is_file()


@pytest.mark.slow
def test_report_links_existing_figures_and_has_every_section(demo_dir):
    report = (demo_dir / "report.md").read_text()
    links = [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert {Path(link).name for link in links} == FIGURES
    for link in links:
        assert (demo_dir / link).stat().st_size > 1000
    assert "| frozen |" in report and "| fishertune |" in report
    assert "## Bootstrap intervals over test images" in report
    assert "## What the mask variants selected" in report


@pytest.mark.slow
def test_per_image_counts_pool_to_the_reported_miou(demo_dir):
    """The evaluator's per-image intersection/union add up to the confusion matrix it scored."""
    results = json.loads((demo_dir / "results.json").read_text())
    for variant in QUICK:
        saved = load_file(demo_dir / "runs" / variant / PER_IMAGE_FILE)
        record = record_of(demo_dir, variant)
        assert list(record.per_image) == list(results["methods"][variant]["target_miou"])
        for domain, (intersection, union) in record.per_image.items():
            assert intersection.shape == (8, 19) and intersection.dtype == np.int64
            np.testing.assert_array_equal(intersection, saved[f"{domain}/intersection"].numpy())
            np.testing.assert_array_equal(union, saved[f"{domain}/union"].numpy())
            assert (intersection <= union).all()
            pooled_i, pooled_u = intersection.sum(0), union.sum(0)
            miou = 100 * np.mean(pooled_i[pooled_u > 0] / pooled_u[pooled_u > 0])
            assert miou == pytest.approx(results["methods"][variant]["target_miou"][domain], abs=1e-9)
        interval = results["bootstrap"]["intervals"][variant]
        assert set(interval) == TARGETS | {"mean_target_miou"}
        assert all(low <= high for low, high in interval.values())


@pytest.mark.slow
def test_mask_records_hold_the_trained_selection(demo_dir):
    results = json.loads((demo_dir / "results.json").read_text())
    for variant in ("fishertune", "random-select"):
        record = record_of(demo_dir, variant)
        saved = load_selection(demo_dir / "runs" / variant / "tuner")["masks"]
        masks = record.masks()
        assert set(masks) == set(saved)
        for name, mask in masks.items():
            np.testing.assert_array_equal(mask, saved[name].numpy())
        selected = sum(int(m.sum()) for m in masks.values())
        assert results["methods"][variant]["trainable_params"] == selected == record.selection["selected"]
        shares, by_block = {}, {}
        for row in record.selection["rows"]:
            shares[row["module"]] = shares.get(row["module"], 0) + row["selected"] / selected
            by_block[str(row["block"])] = by_block.get(str(row["block"]), 0) + row["selected"] / selected
        assert shares == pytest.approx(results["selections"]["variants"][variant]["share_by_type"], abs=1e-4)
        blocks = record.selection["share_by_block"]  # the demo's candidates are all inside the blocks
        assert blocks == pytest.approx(by_block) and list(map(int, blocks)) == sorted(map(int, blocks))


@pytest.mark.slow
def test_report_states_how_much_the_selections_overlap(demo_dir):
    a, b = (load_selection(demo_dir / "runs" / v / "tuner")["masks"] for v in ("fishertune", "random-select"))
    a, b = ({n: m.reshape(-1) for n, m in s.items()} for s in (a, b))
    both = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    assert 0 < both < union
    row = next(line for line in (demo_dir / "report.md").read_text().splitlines()
               if line.startswith("| fishertune | – |"))
    assert row == f"| fishertune | – | {100 * both / union:.1f}% |"


@pytest.mark.slow
def test_rerun_reuses_finished_runs(demo_dir, capsys):
    before = (demo_dir / "runs" / "full" / "model.safetensors").stat().st_mtime_ns
    assert demo(demo_dir, QUICK) == 0
    assert (demo_dir / "runs" / "full" / "model.safetensors").stat().st_mtime_ns == before
    assert "[demo] full:" not in capsys.readouterr().out  # nothing was trained again


def _without_wall_time(report: str) -> str:
    return "\n".join(line for line in report.splitlines() if not line.startswith("- **wall seconds**"))


@pytest.mark.slow
def test_records_alone_give_the_same_results_and_report(demo_dir, tmp_path, capsys):
    """A later session continues from the committed records: no weights, another folder."""
    assert (demo_dir / ".gitignore").read_text().split() == ["runs/", "sweep/", "data/", "configs/"]
    other = tmp_path / "committed"
    shutil.copytree(demo_dir / "records", other / "records")
    capsys.readouterr()
    assert demo(other, QUICK) == 0
    assert "[demo] " not in capsys.readouterr().out  # nothing trained
    assert not (other / "runs").exists()
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (demo_dir, other))
    ours.pop("setup"), theirs.pop("setup")
    assert ours == theirs
    assert _without_wall_time((other / "report.md").read_text()) == \
        _without_wall_time((demo_dir / "report.md").read_text())
    for figure in FIGURES:
        assert (other / "figures" / figure).read_bytes() == (demo_dir / "figures" / figure).read_bytes()


@pytest.mark.slow
def test_a_record_of_another_config_or_with_foreign_arrays_is_not_reused(tmp_path, capsys):
    out = tmp_path / "d"
    assert demo(out, ["frozen"]) == 0
    path = record_path(out, "frozen", "seed1")
    first = json.loads(path.read_text())
    shutil.rmtree(out / "runs")
    capsys.readouterr()
    assert demo(out, ["frozen"], "--set", "train.head_lr=0.02") == 0  # another config: trained again
    assert "[demo] frozen:" in capsys.readouterr().out
    assert json.loads(path.read_text())["config"]["train"]["head_lr"] == 0.02
    shutil.rmtree(out / "runs")
    assert demo(out, ["frozen"]) == 0
    assert json.loads(path.read_text())["entry"]["target_miou"] == first["entry"]["target_miou"]
    arrays = path.with_suffix(".npz")
    arrays.write_bytes(arrays.read_bytes()[:-10])  # a damaged or mismatched arrays file
    capsys.readouterr()
    assert demo(out, ["frozen"]) == 0  # rewritten from the finished run folder, not trained again
    printed = capsys.readouterr().out
    assert "is not the one it was written with" in printed and "[demo] frozen:" not in printed
    assert read_record(out, "frozen", "seed1", load_config(out / "runs" / "frozen" / "config.yaml").to_dict())


def test_unknown_method_is_one_clear_error(tmp_path, capsys):
    assert demo(tmp_path / "d", ["frozen", "fishtune"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown demo method 'fishtune'") and "Traceback" not in err


@pytest.mark.slow
def test_full_mode_reports_fresh_seeds_after_a_source_val_choice(tmp_path, capsys):
    out = tmp_path / "full"
    assert demo(out, ["full", "frozen-noperturb"], "--full", "--seeds", "0,1") == 2
    assert "seed 0 is the learning-rate sweep's seed" in capsys.readouterr().err
    assert demo(out, ["full", "frozen-noperturb"], "--full", "--seeds", "1,2") == 0
    hparams = yaml.safe_load((out / "hparams.yaml").read_text())
    scores = {float(k): v for k, v in hparams["full"]["source_val_miou"].items()}
    assert len(scores) == 3 and hparams["full"]["lr"] == max(scores, key=lambda lr: (scores[lr], -lr))
    for sweep in (out / "sweep" / "full").iterdir():  # the sweep never evaluated a target domain
        (entry,) = json.loads((sweep / "results.json").read_text())["methods"].values()
        assert entry["target_miou"] == {}
        assert load_config(sweep / "config.yaml").train.seed == 0
    # frozen-noperturb takes frozen's choice (frozen swept, it did not) and trains without perturbation
    frozen = hparams["frozen"]["head_lr"]
    assert hparams["frozen-noperturb"] == {"head_lr": frozen, "as": "frozen"}
    assert sorted(p.name for p in (out / "sweep").iterdir()) == ["frozen", "full"]
    results = json.loads((out / "results.json").read_text())
    for variant in ("full", "frozen-noperturb"):
        assert [s["seed"] for s in results["methods"][variant]["seeds"]] == [1, 2]
        for seed in (1, 2):  # trained afresh with the chosen lr and evaluated on the targets
            config = load_config(out / "runs" / variant / f"seed{seed}" / "config.yaml")
            assert config.train.seed == seed and config.data.targets
            assert (config.train.lr if variant == "full" else config.train.head_lr) == \
                (hparams["full"]["lr"] if variant == "full" else frozen)
            assert config.train.perturb.enabled == (variant == "full")
    seeds = results["methods"]["full"]["seeds"]
    assert seeds[0]["target_miou"] != seeds[1]["target_miou"]
    report = (out / "report.md").read_text()
    assert f"| frozen-noperturb | head_lr | **{frozen:g}**, frozen's choice |" in report
    assert "Left out of this plan" in report  # the plan's notes on what it dropped


@pytest.mark.slow
def test_lora_budget_takes_the_rank_closest_to_fishertunes_budget(tmp_path):
    out = tmp_path / "d"
    assert demo(out, ["lora-budget"]) == 0
    config = load_config(out / "runs" / "lora-budget" / "config.yaml")
    # FisherTune's shipped budget, counted by hand: 5% of the backbone weights outside the embeddings
    model = build_base(config)
    candidates = sum(p.numel() for n, p in model.named_parameters()
                     if n.startswith("backbone.") and "embeddings" not in n)
    target = int(FisherTuneTunerConfig().ratio * candidates + 0.5)
    counts = {rank: build_tuner("lora", build_base(config), rank=rank).num_trainable()
              for rank in range(1, 9)}
    best = min(counts, key=lambda rank: (abs(counts[rank] - target), rank))
    assert config.method.options["rank"] == best
    results = json.loads((out / "results.json").read_text())
    assert results["methods"]["lora-budget"]["trainable_params"] == counts[best]


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_is_started_again(tmp_path, capsys):
    out = tmp_path / "d"
    assert demo(out, ["frozen"]) == 0
    run = out / "runs" / "frozen"
    first = json.loads((run / "results.json").read_text())["methods"]["frozen"]
    shutil.rmtree(out / "records")
    for path in ("checkpoints", "model.safetensors", "results.json"):  # what a kill at step 1 leaves
        shutil.rmtree(run / path) if (run / path).is_dir() else (run / path).unlink()
    assert demo(out, ["frozen"]) == 0
    again = json.loads((run / "results.json").read_text())["methods"]["frozen"]
    assert {**again, "train_seconds": 0} == {**first, "train_seconds": 0}
    shutil.rmtree(out / "records")
    shutil.rmtree(run / "checkpoints")
    (run / "results.json").unlink()
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("seed: 1", "seed: 5"))
    capsys.readouterr()
    assert demo(out, ["frozen"]) == 2  # a folder of another config is never deleted
    assert "holds a run of another config" in capsys.readouterr().err
    assert (run / "model.safetensors").is_file()


@pytest.mark.slow
def test_converged_regime_trains_the_plans_recipe_and_reports_curves_plateau_and_decision(tmp_path):
    out = tmp_path / "conv"
    hparams = tmp_path / "hparams.yaml"
    hparams.write_text("origin: a test's choice\nfrozen: {head_lr: 1.0e-2}\nfull: {lr: 1.0e-4}\n")
    assert demo(out, ["frozen", "full"], "--regime", "converged", "--hparams", str(hparams), "--seeds", "1,2",
                "--set", "train.eval_every=2") == 0
    assert not (out / "sweep").exists() and not (out / "hparams.yaml").exists()  # the file's rates, no sweep
    results = json.loads((out / "results.json").read_text())
    full = {}
    for variant in ("frozen", "full"):
        for seed in (1, 2):
            run = out / "runs" / variant / f"seed{seed}"
            config = load_config(run / "config.yaml")
            assert config.model.head == "multilevel" and config.train.checkpoint_every == 160  # the plan's
            assert config.train.lr == (1e-4 if variant == "full" else 0.0)
            record = read_record(out, variant, f"seed{seed}", config.to_dict())
            logged = [[r["step"], r["source_miou"]] for r in map(json.loads, (run / "log.jsonl").open())
                      if r["phase"] == "val"]
            assert record.curve == logged and [s for s, _ in logged] == [2, 4, 6]  # every 2 steps, the end
            assert logged[-1][1] == pytest.approx(record.result.source_miou)
            if variant == "full":
                full[seed] = record.curve
    means = {v: [s["mean_target_miou"] for s in results["methods"][v]["seeds"]] for v in ("frozen", "full")}
    regime = results["regime"]
    d = sum(means["full"]) / 2 - sum(means["frozen"]) / 2
    assert regime["decision"]["full_minus_frozen"] == pytest.approx(d, abs=0.006)
    assert regime["plateau"]["to_step"] == 6 and regime["plateau"]["from_step"] == 4  # nearest to 3/4 of 6
    gain = (full[1][-1][1] + full[2][-1][1]) / 2 - (full[1][1][1] + full[2][1][1]) / 2
    assert regime["plateau"]["gain"] == pytest.approx(gain, abs=0.006)
    report = (out / "report.md").read_text()
    assert regime["plateau"]["tuning_steps"] == 4 and regime["plateau"]["at_cap"] is False  # --set
    assert "converged regime" in report and "Plateau check" in report and "Decision (the rule" in report
    assert "figures/source_val_curves.png" in report and (out / "figures" / "source_val_curves.png").is_file()
    assert f"Learning rates from {hparams}: a test's choice" in report


@pytest.mark.slow
def test_an_hparams_file_without_a_variant_is_refused_before_any_work(tmp_path, capsys):
    hparams = tmp_path / "hparams.yaml"
    hparams.write_text("frozen: {head_lr: 1.0e-2}\n")
    assert demo(tmp_path / "d", ["frozen", "full"], "--full", "--hparams", str(hparams)) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: --hparams: {hparams} has no learning rate for full"
    assert not (tmp_path / "d").exists()
    assert demo(tmp_path / "d", ["frozen"], "--full", "--hparams", str(tmp_path / "none.yaml")) == 2
    assert "is not a file" in capsys.readouterr().err and not (tmp_path / "d").exists()
    hparams.write_text("frozen: {head_lr: [1\n")  # malformed YAML: one line naming the file, no traceback
    assert demo(tmp_path / "d", ["frozen"], "--full", "--hparams", str(hparams)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --hparams file {hparams} is not valid YAML") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--set", "train.stpes=3"], "unknown config key 'train.stpes' (did you mean 'train.steps'?)"),
    (["--full", "--regime", "converged"], "--full and --regime converged are two different benchmarks")])
def test_a_bad_demo_command_is_refused_before_any_work(extra, message, tmp_path, capsys):
    assert demo(tmp_path / "d", ["frozen"], *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "d").exists()


def test_the_plan_and_the_quick_learning_rates_agree():
    plan = yaml.safe_load((PACKAGED_CONFIGS / "demo" / "plan.yaml").read_text())
    hparams = yaml.safe_load((PACKAGED_CONFIGS / "demo" / "hparams.yaml").read_text())
    variants = plan["variants"]
    assert plan["full"]["seeds"] == [1, 2, 3, 4, 5] and plan["quick"]["seeds"] == [1]
    assert set(plan["full"]["variants"]) >= {
        "frozen", "frozen-noperturb", "full", "lora", "lora-budget", "rein", "fishertune"}
    for name in plan["quick"]["variants"] + plan["full"]["variants"]:
        assert name in variants
    for name, spec in variants.items():
        assert {"lr", "head_lr"} & set(hparams[name]), name  # the quick mode's lr
        source = spec.get("lr_from", name)
        assert source in plan["full"]["lr_grid"] or variants[source]["method"] in plan["full"]["lr_grid"]
        if spec.get("lr_from"):
            lrs = [{k: v for k, v in hparams[n].items() if k in ("lr", "head_lr")} for n in (name, source)]
            assert lrs[0] == lrs[1], name
    # FisherTune is the tuner as shipped; each ablation row changes the named options only and sweeps
    # its own learning rate
    assert "options" not in variants["fishertune"]
    ablation = {"random-select": {"score": "random"},
                "fim-select": {"score": "fim", "variational": "off"},
                "deltaf-select": {"score": "delta_f"}, "drfim-select": {"variational": "off"},
                "drfim-none": {"normalize": "none"}, "drfim-mean": {"normalize": "mean"},
                "drfim-rank": {"normalize": "rank"}, "drfim-pertensor": {"normalize": "per_tensor"},
                "drfim-sample": {"domain_weight": "sample"}}
    for name, options in ablation.items():
        assert variants[name] == {"method": "fishertune", "options": options}, name
    # the converged regime sweeps the full mode's grids, over variants of the plan
    assert plan["converged"]["lr_grid"] == plan["full"]["lr_grid"]
    assert set(plan["converged"]["variants"]) <= set(variants)
    # the rule said "fine-tuning costs nothing" (docs/benchmark.md): the regime runs the pilot only
    assert plan["converged"]["seeds"] == [1, 2]
    assert plan["converged"]["variants"] == ["frozen", "full", "random-select"]
    for grid in plan["full"]["lr_grid"].values():
        ((_, values),) = grid.items()
        assert len(values) >= 3 and values == sorted(values)
