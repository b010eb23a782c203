"""RunResult: results.json written and read through one typed object; files written before it still load."""

import json
import shutil
import statistics
from pathlib import Path

import pytest

from fishertune.errors import InputError
from fishertune.report.markdown import write_report
from fishertune.run_result import SCHEMA_VERSION, RunResult, methods_from_json, read_run_result, results_json

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
COMMITTED_DEMO = RESULTS / "demo_full" / "results.json"  # written before RunResult existed
COMMITTED_RECORD = RESULTS / "demo_full_2026-11-30" / "records" / "full" / "sweep-lr=0.0001.json"


def _run(seed, source, fog, night):
    return RunResult(trainable_params=10, source_miou=source, target_miou={"fog": fog, "night": night},
                     mean_target_miou=(fog + night) / 2, train_seconds=float(seed + 1), head_params=3,
                     per_class_iou={"fog": {"road": fog}, "night": {"road": night}}, seed=seed)


def test_a_committed_results_file_loads_and_writes_back_the_same_entries(tmp_path):
    copy = tmp_path / "results.json"
    shutil.copyfile(COMMITTED_DEMO, copy)
    raw = json.loads(copy.read_text())
    assert "schema_version" not in raw  # the old layout
    methods = methods_from_json(raw)
    assert list(methods) == list(raw["methods"])
    for name, result in methods.items():
        assert result.to_json() == raw["methods"][name]
        assert [run.seed for run in result.seeds] == [s["seed"] for s in raw["methods"][name]["seeds"]]
    assert methods["frozen"].target_miou == raw["methods"]["frozen"]["target_miou"]
    report = write_report(tmp_path, raw).read_text()  # the report still reads it
    assert all(f"| {name} |" in report for name in methods)


def test_a_committed_record_entry_loads(tmp_path):
    copy = tmp_path / "record.json"
    shutil.copyfile(COMMITTED_RECORD, copy)
    entry = json.loads(copy.read_text())["entry"]
    result = RunResult.from_json(entry)
    assert result.source_miou == entry["source_miou"] and result.target_miou == {}
    assert result.mean_target_miou is None and result.to_json() == entry


def test_a_run_folder_result_round_trips(tmp_path):
    result = _run(3, 70.0, 50.0, 40.0)
    (tmp_path / "results.json").write_text(json.dumps(results_json({"full": result})))
    assert json.loads((tmp_path / "results.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert read_run_result(tmp_path) == result
    assert read_run_result(tmp_path / "missing") is None


def test_old_shapes_read_the_same():
    entry = _run(0, 70.0, 50.0, 40.0).to_json()
    assert methods_from_json({"methods": {"a": entry}}) == methods_from_json({"a": entry})
    written = results_json({"a": RunResult.from_json(entry)})
    assert methods_from_json({"a": entry}) == methods_from_json(written)


def test_of_seeds_averages_every_number_and_keeps_the_runs():
    runs = [_run(1, 70.0, 50.0, 40.0), _run(2, 72.0, 54.0, 41.0), _run(3, 71.0, 49.0, 45.0)]
    combined = RunResult.of_seeds(runs)
    assert combined.source_miou == pytest.approx(71.0)
    assert combined.target_miou == pytest.approx({"fog": 51.0, "night": 42.0})
    assert combined.mean_target_miou == pytest.approx(statistics.fmean([45.0, 47.5, 47.0]))
    assert combined.train_seconds == pytest.approx(3.0) and combined.trainable_params == 10
    assert [run.seed for run in combined.seeds] == [1, 2, 3]
    assert combined.seeds[0].source_miou == 70.0 and combined.seeds[0].per_class_iou is None
    one = RunResult.of_seeds(runs[:1])
    assert one.seed is None and one.seeds == runs[:1] and one.per_class_iou == runs[0].per_class_iou
    assert one.to_json()["seeds"][0]["seed"] == 1 and "seed" not in one.to_json()


def test_bad_results_are_one_clear_error():
    with pytest.raises(InputError, match="schema_version 2"):
        methods_from_json({"schema_version": 2, "methods": {"a": {}}})
    with pytest.raises(InputError, match="unknown result field 'miou'"):
        methods_from_json({"methods": {"a": {"miou": 3.0}}})
    with pytest.raises(InputError, match="target_miou must map"):
        methods_from_json({"methods": {"a": {"target_miou": [1.0]}}})
    with pytest.raises(InputError, match="no methods"):
        methods_from_json({"setup": {}})
