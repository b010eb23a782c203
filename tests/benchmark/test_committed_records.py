"""A benchmark folder written before `fishertune.benchmark` existed resumes with it: the committed records of
benchmarks/results/demo_full_2026-11-30 are reused as they are, nothing is trained again."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from fishertune.benchmark import demo
from fishertune.benchmark.records import Record, read_record
from fishertune.benchmark.synthetic import DOMAINS, generate
from fishertune.run_result import RunResult

COMMITTED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "demo_full_2026-11-30"


@pytest.fixture
def copied(tmp_path, monkeypatch):
    """A copy of the committed records, and tiny stand-ins for the target images the runner shows as
    examples (the data folders are named as `fishertune demo --full` names them)."""
    out = tmp_path / "demo_full"
    shutil.copytree(COMMITTED / "records", out / "records")
    plan = yaml.safe_load(demo.PLAN.read_text())
    counts, size, seed = plan["data"]["full"], plan["data"]["size"], plan["data"]["seed"]
    targets = [d for d, spec in DOMAINS.items() if spec.scenes == "test"]
    generate(out / "data" / f"n{counts['test']}-s{size}-seed{seed}", targets, n=1, size=28, seed=0,
             progress=False)
    data = {demo.SOURCE: out / "data" / f"n{counts['train']}-s{size}-seed{seed}" / demo.SOURCE,
            demo.SOURCE_VAL: out / "data" / f"n{counts['val']}-s{size}-seed{seed}" / demo.SOURCE_VAL,
            **{d: out / "data" / f"n{counts['test']}-s{size}-seed{seed}" / d for d in targets}}

    def no_training(*args, **kwargs):
        raise AssertionError("a committed run was trained again")

    monkeypatch.setattr("fishertune.engine.trainer.train", no_training)
    return out, plan, data


@pytest.mark.parametrize("variant", ["frozen", "full", "lora", "rein"])
def test_the_sweep_is_taken_from_the_committed_records(copied, variant):
    out, plan, data = copied
    runner = demo._Runner(out, plan, data, demo.DEFAULT_BACKBONE, [], progress=False)
    grids = plan["full"]["lr_grid"]
    grid = grids.get(variant) or grids[plan["variants"][variant]["method"]]
    chosen = runner.choose_hparams(variant, grid, plan["full"]["perturb"])
    ((key, values),) = grid.items()
    committed = {}
    for value in values:  # read independently of the demo code: the record files as committed
        record = COMMITTED / "records" / variant / f"sweep-{key}={value:g}.json"
        committed[value] = json.loads(record.read_text())["entry"]["source_miou"]
    best = max(committed, key=lambda v: (committed[v], -v))
    assert chosen[key] == best
    assert chosen["source_val_miou"] == {f"{v:g}": round(m, 2) for v, m in committed.items()}


def test_a_record_of_another_config_is_not_reused(copied):
    out, plan, data = copied
    runner = demo._Runner(out, plan, data, demo.DEFAULT_BACKBONE, ["train.steps=7"], progress=False)
    path = runner.config_file("full/lr=0.0001", "full", {"lr": 1e-4}, demo.SWEEP_SEED, True, targets=False)
    config = demo.load_config(path, runner.overrides)
    assert read_record(out, "full", "sweep-lr=0.0001", config.to_dict()) is None
    assert read_record(out, "full", "sweep-lr=0.0001", demo.load_config(path).to_dict()) is not None


ABLATION = COMMITTED.parent / "ablation_2026-12-06"


@pytest.mark.parametrize("score, reused", [("random", True), ("fim", False)])
def test_a_record_written_before_an_option_was_renamed_is_still_reused(tmp_path, score, reused):
    """The fair ablation's random-select records were written with `selection: random`, the old name of
    `score` (MaskSelectorConfig.RENAMED); the plan now says `score: random`, and its record still matches."""
    saved_path = ABLATION / "records" / "random-select" / "seed1.json"
    saved = json.loads(saved_path.read_text())
    assert saved["config"]["method"]["options"] == {"selection": "random"}
    plan = yaml.safe_load(demo.PLAN.read_text())
    assert plan["variants"]["random-select"]["options"] == {"score": "random"}
    out = tmp_path / "ablation"
    (out / "records" / "random-select").mkdir(parents=True)
    for suffix in (".json", ".npz"):
        shutil.copy(saved_path.with_suffix(suffix), out / "records" / "random-select" / f"seed1{suffix}")
    config = json.loads(json.dumps(saved["config"]).replace("$DIR", str(out.resolve())))
    config["method"]["options"] = {"score": score}
    assert (read_record(out, "random-select", "seed1", config) is not None) == reused


def test_bootstrap_intervals_do_not_depend_on_the_order_records_hold_their_domains():
    """A variant whose seeds were partly read from records (evaluation order) and partly written in this
    process gets its intervals, the same as with every seed in one order (the fair ablation's
    random-select lost its row to this once)."""
    rng = np.random.default_rng(0)
    domains = ["photo", "fog", "night"]

    def record(order: list[str]) -> Record:
        counts = {d: (rng.integers(0, 50, (4, 19)), rng.integers(50, 100, (4, 19))) for d in domains}
        result = RunResult(1, 1.0, {d: 1.0 for d in domains}, 1.0, 1.0)
        return Record(result, {d: counts[d] for d in order}, {})

    runs = [record(domains), record(sorted(domains))]
    same = [Record(r.result, {d: r.per_image[d] for d in domains}, {}) for r in runs]
    bootstrap = {"resamples": 50, "seed": 0, "level": 0.95}
    mixed = demo.collect_results({"v": list(enumerate(runs, 1))}, bootstrap)[1]
    ordered = demo.collect_results({"v": list(enumerate(same, 1))}, bootstrap)[1]
    assert mixed["bootstrap"]["intervals"]["v"] == ordered["bootstrap"]["intervals"]["v"]
