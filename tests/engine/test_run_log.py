import json

from fishertune.engine.run_log import RunLogger


def test_truncate_drops_later_steps_and_a_torn_last_line(tmp_path):
    with RunLogger(tmp_path) as logger:
        for step in (1, 2, 3):
            logger.log(step, "tune", loss=float(step))
    with open(tmp_path / "log.jsonl", "a", encoding="utf-8") as file:
        file.write('{"step": 4, "phase": "tu')  # a run killed mid-write
    RunLogger(tmp_path, enabled=True).truncate_after(2)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records == [{"step": 1, "phase": "tune", "loss": 1.0}, {"step": 2, "phase": "tune", "loss": 2.0}]


def test_the_logger_closes_when_its_block_ends(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log(1, "warmup", loss=0.5)
        assert logger.tensorboard is not None  # tensorboard is in the dev extra
    assert logger.tensorboard is None  # the TensorBoard writer (when installed) is closed and released
