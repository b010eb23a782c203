"""SIGTERM and SIGINT held back inside `held_interrupts` and raised when the outermost block ends (the
TensorBoard writer's queue must not see an exception raised in the middle of it)."""

import os
import signal

import pytest

from fishertune.cli.signals import signals_as_interrupts
from fishertune.engine.run_log import RunLogger
from fishertune.errors import RunInterrupted
from fishertune.interrupts import held_interrupts


def send(signum):
    os.kill(os.getpid(), signum)
    for _ in range(1000):  # the handler runs between bytecodes, in the main thread
        pass


def test_a_signal_outside_a_hold_interrupts_at_once():
    with signals_as_interrupts(), pytest.raises(RunInterrupted) as raised:
        send(signal.SIGTERM)
        pytest.fail("not interrupted")
    assert raised.value.signum == signal.SIGTERM


def test_a_signal_inside_nested_holds_is_raised_when_the_outermost_ends():
    done = []
    with signals_as_interrupts(), pytest.raises(KeyboardInterrupt) as raised:
        with held_interrupts():
            with held_interrupts():
                send(signal.SIGINT)
                send(signal.SIGTERM)  # the first signal is the one raised
                done.append("inner")
            done.append("outer")
        pytest.fail("the held signal was not raised")
    assert done == ["inner", "outer"] and type(raised.value) is KeyboardInterrupt


def test_a_block_that_fails_drops_the_signal_it_held():
    with signals_as_interrupts():
        with pytest.raises(ValueError), held_interrupts():
            send(signal.SIGTERM)
            raise ValueError("its own failure")
        with held_interrupts():
            pass  # nothing left pending


def test_a_sigterm_during_tensorboard_logging_waits_for_the_record(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter  # the dev extra installs tensorboard

    added = []
    original = SummaryWriter.add_scalar

    def add_scalar(self, tag, value, step):
        if not added:
            send(signal.SIGTERM)
        original(self, tag, value, step)
        added.append(tag)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    with signals_as_interrupts(), RunLogger(tmp_path) as logger:
        with pytest.raises(RunInterrupted):
            logger.log(1, "tune", loss=0.5, lr=1e-3)
        assert added == ["tune/loss", "tune/lr"]  # every scalar reached the writer before the interrupt
