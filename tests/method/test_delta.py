import json
import os

import pytest
import torch
from safetensors import safe_open
from tiny_models import MLP, classification_loss, make_batches

from fishertune import FisherTuneError, MaskedAdamW, load_delta, read_delta_config, save_delta, select_topk


def tuned(mlp):
    base = {n: p.detach().clone() for n, p in mlp.named_parameters()}
    g = torch.Generator().manual_seed(0)
    masks = select_topk({n: torch.rand(p.shape, generator=g) for n, p in mlp.named_parameters()
                         if n.startswith("fc")}, ratio=0.2)
    optimizer = MaskedAdamW([(n, p) for n, p in mlp.named_parameters() if n in masks], masks, lr=1e-2)
    batch = make_batches([4], (6,))[0]
    for _ in range(5):
        optimizer.zero_grad()
        classification_loss(mlp, batch).mean().backward()
        optimizer.step()
    return base, masks


def fresh_base(base):
    model = MLP()
    model.load_state_dict(base)
    return model


def test_round_trip_is_bit_exact(mlp, tmp_path):
    base, masks = tuned(mlp)
    path = tmp_path / "delta.safetensors"
    config = save_delta(mlp, base, masks, path)
    assert [f for f in os.listdir(tmp_path)] == ["delta.safetensors"]  # atomic: no temporary left
    assert read_delta_config(path) == config
    assert config["tensors"]["fc1.weight"]["count"] == int(masks["fc1.weight"].sum())
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["fishertune_delta"])["format"] == "fishertune-delta"
        assert f.get_tensor("fc1.weight.indices").dtype == torch.int64
    model = fresh_base(base)
    load_delta(model, path)
    for (n, a), (_, b) in zip(mlp.named_parameters(), model.named_parameters()):
        assert torch.equal(a, b), n


def test_refuses_wrong_base_and_leaves_model_untouched(mlp, tmp_path):
    base, masks = tuned(mlp)
    path = tmp_path / "delta.safetensors"
    save_delta(mlp, base, masks, path)
    other = dict(base)
    other["fc2.weight"] = base["fc2.weight"].clone()
    other["fc2.weight"][0, 0] += 1e-3
    model = fresh_base(other)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(FisherTuneError, match="'fc2.weight' was made for a different base"):
        load_delta(model, path)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(FisherTuneError, match="'fc1.weight' has shape \\[8, 6\\], the model's is \\[9, 6\\]"):
        load_delta(MLP(hidden=9), path)
    with pytest.raises(FisherTuneError, match="not a parameter"):
        load_delta(torch.nn.Linear(2, 2), path)


def test_refuses_changes_outside_the_mask_and_bad_files(mlp, tmp_path):
    base, masks = tuned(mlp)
    with torch.no_grad():
        mlp.fc1.weight[~masks["fc1.weight"]] += 1.0
    with pytest.raises(FisherTuneError, match="'fc1.weight' changed outside its mask"):
        save_delta(mlp, base, masks, tmp_path / "d.safetensors")
    with pytest.raises(FisherTuneError, match="no delta file"):
        load_delta(mlp, tmp_path / "missing.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FisherTuneError, match="not a FisherTune delta"):
        load_delta(mlp, tmp_path / "plain.safetensors")
