"""The Trainer's public steps, its phases and what a checkpoint stores of them, and resuming across the
phase boundary (in-process; tests/cli/test_resume_and_ddp.py kills a real process)."""

import json

import pytest
import torch
from trainer_helpers import synth_source, tiny_run_config

from fishertune.engine.trainer import Phase, Trainer
from fishertune.errors import InputError, RunInterrupted, UsageError

OPTIONS = {"budget": 0.05, "ratio_min": 0.02, "growth_steps": 1.0, "update_every": 1}  # grows every step


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return synth_source(tmp_path_factory.mktemp("synth"))


def weights(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def checkpoint_state(run_dir, step: int) -> tuple[int, dict]:
    """(step, top-level state entries) of a checkpoint's state.json, as written on disk."""
    record = json.loads((run_dir / "checkpoints" / f"step_{step:07d}" / "state.json").read_text())
    return record["step"], dict(record["state"]["__dict__"])


def interrupted_at(config, run_dir, stop: int) -> Trainer:
    """Run until step `stop` starts (checkpoint `stop` written), then stop as Ctrl-C would."""
    trainer = Trainer(config, run_dir, progress=False)
    original = trainer.train_step

    def train_step(step, batches):
        if step == stop:
            raise KeyboardInterrupt
        return original(step, batches)

    trainer.train_step = train_step
    with pytest.raises(RunInterrupted, match="last checkpoint"):
        trainer.run()
    return trainer


def test_phase_values_are_the_strings_checkpoints_store():
    assert [p.value for p in Phase] == ["warmup", "tune"]  # older run folders hold these in state.json
    assert Phase("tune") is Phase.TUNE and json.dumps(Phase.WARMUP.value) == '"warmup"'


def test_phase_of_each_step(source, tmp_path):
    trainer = Trainer(tiny_run_config(source, warmup_steps=3, steps=2), tmp_path / "run", progress=False)
    assert [trainer.phase_at(s) for s in range(5)] == [Phase.WARMUP] * 3 + [Phase.TUNE] * 2
    assert trainer.phase is None and len(trainer.estimation_batches) == 1
    trainer.folder.clean_up()


def test_warm_up_head_trains_the_head_alone_as_a_run_does(source, tmp_path):
    config = tiny_run_config(source, checkpoint_every=2)  # the first checkpoint ends the warm-up
    trainer = Trainer(config, tmp_path / "alone", progress=False)
    trainer.folder.clean_up()
    before = weights(trainer.model)
    trainer.warm_up_head()
    after = weights(trainer.model)
    assert trainer.phase is Phase.WARMUP
    assert not any(p.requires_grad for p in trainer.model.backbone.parameters())
    backbone = [n for n in before if n.startswith("backbone.")]
    assert backbone and all(torch.equal(before[n], after[n]) for n in backbone)
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("head."))

    run = interrupted_at(config, tmp_path / "run", config.train.warmup_steps)
    saved = weights(run.model)  # the model as the warm-up's checkpoint (step 2) left it
    assert all(torch.equal(saved[n], after[n]) for n in after)
    step, state = checkpoint_state(tmp_path / "run", 2)
    assert step == 2 and state["phase"] == "warmup"


def test_estimate_keeps_what_the_tuners_prepare_releases(source, tmp_path):
    trainer = Trainer(tiny_run_config(source, options={"budget": 0.05}), tmp_path / "run", progress=False)
    trainer.folder.clean_up()
    selector = trainer.estimate()
    assert selector is trainer.tuner.selector
    assert set(selector.fisher) == set(selector.scores) == set(selector.masks) == set(selector.candidates)
    assert len(selector.draws) == 1 and selector.terms  # kept for inspection
    total = sum(m.numel() for m in selector.masks.values())
    assert selector.num_selected() == int(0.4 * 0.05 * total + 0.5)  # δ(0): the growth starts at 40%
    full = Trainer(tiny_run_config(source, method="full"), tmp_path / "full", progress=False)
    full.folder.clean_up()
    with pytest.raises(UsageError, match="needs a mask tuner, not 'full'"):
        full.estimate()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [2, 3])  # the last warm-up checkpoint; one with the mask grown once
def test_resume_continues_a_run_bit_for_bit(source, tmp_path, stop):
    config = tiny_run_config(source, options=OPTIONS)
    straight = Trainer(config, tmp_path / "straight", progress=False)
    entry = straight.run()
    assert straight.phase is Phase.TUNE

    interrupted_at(config, tmp_path / "resumed", stop)
    step, state = checkpoint_state(tmp_path / "resumed", stop)
    assert step == stop and state["phase"] == ("warmup" if stop <= config.train.warmup_steps else "tune")
    resumed = Trainer(config, tmp_path / "resumed", resume=True, progress=False)
    resumed_entry = resumed.run()
    a, b = weights(straight.model), weights(resumed.model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert resumed.tuner.selector.history == straight.tuner.selector.history
    assert [h["step"] for h in straight.tuner.selector.history] == [0, 1]  # δ(0), grown after tuning step 0
    assert {k: v for k, v in resumed_entry.to_json().items() if k != "train_seconds"} == \
        {k: v for k, v in entry.to_json().items() if k != "train_seconds"}


def test_a_checkpoint_with_an_unknown_phase_is_refused(source, tmp_path):
    config = tiny_run_config(source)
    interrupted_at(config, tmp_path / "run", 1)
    path = tmp_path / "run" / "checkpoints" / "step_0000001" / "state.json"
    record = json.loads(path.read_text())
    entries = record["state"]["__dict__"]
    record["state"]["__dict__"] = [[k, "cooldown" if k == "phase" else v] for k, v in entries]
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="is damaged: unknown phase 'cooldown'"):
        Trainer(config, tmp_path / "run", resume=True, progress=False).run()


def test_a_finished_run_writes_its_report_and_curves(source, tmp_path):
    from PIL import Image

    from fishertune.report.markdown import format_count

    config = tiny_run_config(source, "full", warmup_steps=2, steps=3)
    run = tmp_path / "run"
    Trainer(config, run, progress=False).run()
    image = Image.open(run / "curves.png")
    assert image.size[0] > 300 and image.size[1] > 200
    report = (run / "report.md").read_text()
    results = json.loads((run / "results.json").read_text())["methods"]["full"]
    assert "# Run: full" in report and "](curves.png)" in report
    assert f"| full | {format_count(results['trainable_params'])} |" in report  # the results table
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["phase"] in ("warmup", "tune")] == [1, 2, 3, 4, 5]
