import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny_models import MLP, classification_loss, make_batches

from fishertune import FisherTuneError, MaskedAdamW, load_delta, read_delta_config, save_delta, select_topk
from fishertune.sparse.flat_index import flat_indices, index_dtype

OLD_DELTA = Path(__file__).parent / "fixtures" / "delta_int64.safetensors"


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
        assert f.get_tensor("fc1.weight.indices").dtype == torch.int32  # 4 bytes per entry
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


def fixture_base():
    """The base of fixtures/delta_int64.safetensors: a Linear(4, 3) with weights arange/8, bias arange/4."""
    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(torch.arange(12, dtype=torch.float32).view(3, 4) / 8)
        model.bias.copy_(torch.arange(3, dtype=torch.float32) / 4)
    return model


def test_delta_with_int64_indices_still_loads():
    # written by save_delta before indices were stored as int32 (int64 indices)
    with safe_open(str(OLD_DELTA), framework="pt") as f:
        assert f.get_tensor("weight.indices").dtype == torch.int64
    model = fixture_base()
    expected_weight, expected_bias = model.weight.detach().clone(), model.bias.detach().clone()
    expected_weight.view(-1)[[1, 6, 11]] = torch.tensor([-1.5, 2.25, 7.0])
    expected_bias[2] = -0.5
    load_delta(model, OLD_DELTA)
    assert torch.equal(model.weight, expected_weight) and torch.equal(model.bias, expected_bias)


def test_indices_are_int32_below_two_to_the_31_entries():
    assert index_dtype(2**31 - 1) == torch.int32 and index_dtype(2**31) == torch.int64
    mask = torch.zeros(5, 7, dtype=torch.bool)
    mask[1, 2] = mask[4, 6] = True
    index = flat_indices(mask)
    assert index.dtype == torch.int32 and index.tolist() == [9, 34]


def _tampered(path, name, **replace):
    """The delta at `path` with `name`'s indices or values replaced (its header and config kept)."""
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    for kind, value in replace.items():
        tensors[f"{name}.{kind}"] = value(tensors[f"{name}.{kind}"])
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize(("kind", "change", "message"), [
    ("values", lambda v: torch.full_like(v, float("nan")), "values hold NaN or infinity"),
    ("values", lambda v: v.clone().index_fill_(0, torch.tensor([0]), float("inf")), "NaN or infinity"),
    ("indices", lambda i: i.clone().index_fill_(0, torch.tensor([0]), 10**6), "indices outside"),
    ("indices", lambda i: i.float(), "int32 or int64 indices")])
def test_a_tampered_delta_is_refused_before_any_weight_changes(mlp, tmp_path, kind, change, message):
    base, masks = tuned(mlp)
    path = tmp_path / "d.safetensors"
    save_delta(mlp, base, masks, path)
    _tampered(path, "fc1.weight", **{kind: change})
    model = fresh_base(base)
    with pytest.raises(FisherTuneError, match=message):
        load_delta(model, path)
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters())
