"""Checkpoints: nested optimiser/scheduler/RNG state through safetensors + JSON, continuing identically."""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from fishertune.engine import checkpoint as ckpt


def make_training(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 / (1 + i))
    return model, optimizer, scheduler


def train_steps(model, optimizer, scheduler, n: int) -> None:
    for _ in range(n):
        x = torch.randn(4, 5)
        loss = nn.functional.dropout(model(x), 0.3).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def test_checkpoint_continues_exactly_like_the_uninterrupted_run(tmp_path):
    model, optimizer, scheduler = make_training()
    train_steps(model, optimizer, scheduler, 3)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": ckpt.rng_state(), "extra": {"tuple": (1, 2.5, "x"), "ints": {3: [True, None]}}}
    ckpt.save_checkpoint(tmp_path, 3, model, state)
    train_steps(model, optimizer, scheduler, 4)  # the uninterrupted run goes on

    fresh, fresh_optimizer, fresh_scheduler = make_training(seed=1)  # different init: all must come from disk
    step, loaded = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), fresh)
    fresh_optimizer.load_state_dict(loaded["optimizer"])
    fresh_scheduler.load_state_dict(loaded["scheduler"])
    ckpt.set_rng_state(loaded["rng"])
    assert step == 3 and loaded["extra"] == {"tuple": (1, 2.5, "x"), "ints": {3: [True, None]}}
    train_steps(fresh, fresh_optimizer, fresh_scheduler, 4)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


def test_rng_states_round_trip_through_json(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    tensors = {}
    record = json.dumps(ckpt.flatten(ckpt.rng_state(), tensors))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(ckpt.unflatten(json.loads(record), tensors))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_module_registered_twice_is_stored_once_and_loads(tmp_path):
    class Aliased(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2)
            self.alias = self.inner  # e.g. a backbone exposing its blocks under a second name

    model = Aliased()
    ckpt.save_model(model, tmp_path / "m.safetensors")
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "m.safetensors")) == {"inner.weight", "inner.bias"}
    other = Aliased()
    ckpt.load_model(other, tmp_path / "m.safetensors")
    assert torch.equal(other.alias.weight, model.inner.weight)


def test_only_the_latest_checkpoint_is_kept_and_a_failed_save_leaves_it_intact(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    ckpt.save_checkpoint(tmp_path, 1, model, {"a": torch.ones(2)})
    ckpt.save_checkpoint(tmp_path, 2, model, {"a": torch.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step_0000002"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "write_json", broken)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 3, model, {"a": torch.zeros(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step_0000002"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000002"


def test_weights_for_another_model_are_refused(tmp_path):
    from fishertune.errors import FisherTuneError

    ckpt.save_model(nn.Linear(2, 2), tmp_path / "m.safetensors")
    with pytest.raises(FisherTuneError, match="do not fit the model"):
        ckpt.load_model(nn.Sequential(nn.Linear(2, 2)), tmp_path / "m.safetensors")
