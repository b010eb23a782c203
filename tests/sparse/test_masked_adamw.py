import copy
import io

import pytest
import torch
from tiny_models import classification_loss, make_batches

from fishertune import FisherTuneError, MaskedAdamW, select_topk


def masks_for(model, ratio, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters() if n.startswith("fc1")}
    return select_topk(scores, ratio=ratio)


def train(model, optimizer, batches, steps):
    for step in range(steps):
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        classification_loss(model, batch).mean().backward()
        optimizer.step()


def test_unselected_entries_stay_bit_exact_and_selected_match_adamw(mlp):
    masks = masks_for(mlp, 0.3)
    base = {n: p.detach().clone() for n, p in mlp.named_parameters()}
    reference = copy.deepcopy(mlp)
    settings = dict(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99), eps=1e-8)
    optimizer = MaskedAdamW(mlp.named_parameters(), masks, **settings)
    adamw = torch.optim.AdamW(reference.parameters(), foreach=False, **settings)
    ref_params = dict(reference.named_parameters())
    batches = make_batches([4, 4, 4], (6,))
    for step in range(50):
        optimizer.zero_grad()
        classification_loss(mlp, batches[step % 3]).mean().backward()
        optimizer.step()
        for n, p in mlp.named_parameters():  # the same gradients, masked, drive the dense reference
            grad = torch.zeros_like(p) if p.grad is None else p.grad
            ref_params[n].grad = grad * masks[n] if n in masks else grad.clone()
        adamw.step()
    for n, p in mlp.named_parameters():
        if n in masks:
            assert torch.equal(p[~masks[n]], base[n][~masks[n]]), n  # bit for bit, despite weight decay
            assert not torch.equal(p[masks[n]], base[n][masks[n]])
            torch.testing.assert_close(p[masks[n]], ref_params[n][masks[n]], rtol=1e-5, atol=1e-7)
        elif n.startswith("fc2"):  # dense AdamW (the "head")
            torch.testing.assert_close(p, ref_params[n], rtol=1e-5, atol=1e-7)


def test_state_memory_is_proportional_to_selection(mlp):
    sizes = []
    for ratio in (0.1, 0.2, 0.4):
        masks = masks_for(mlp, ratio)
        optimizer = MaskedAdamW([(n, p) for n, p in mlp.named_parameters() if n in masks], masks)
        k = sum(int(m.sum()) for m in masks.values())
        # per selected entry: int32 index + exp_avg + exp_avg_sq (float32) + int32 step = 16 bytes
        assert optimizer.state_bytes() == 16 * k
        sizes.append(optimizer.state_bytes())
    assert sizes[0] < sizes[1] < sizes[2]


def test_states_survive_mask_growth(mlp):
    small = masks_for(mlp, 0.2)
    optimizer = MaskedAdamW(mlp.named_parameters(), small, lr=1e-2, weight_decay=0.0)
    batches = make_batches([4], (6,))
    train(mlp, optimizer, batches, 3)
    p = mlp.fc1.weight
    before = {k: v.clone() for k, v in optimizer.state[p].items()}
    grown = {n: m | masks_for(mlp, 0.5, seed=1)[n] for n, m in small.items()}
    optimizer.update_masks(grown)
    after = optimizer.state[p]
    old_index, new_index = before["index"], after["index"]
    assert torch.equal(new_index, grown["fc1.weight"].reshape(-1).nonzero().squeeze(1))
    position = torch.searchsorted(new_index, old_index)
    for key in ("exp_avg", "exp_avg_sq", "entry_step"):
        assert torch.equal(after[key][position], before[key])
    fresh = ~torch.isin(new_index, old_index)
    assert fresh.any() and (after["entry_step"][fresh] == 0).all() and (after["exp_avg"][fresh] == 0).all()
    assert torch.equal(optimizer.masks["fc1.weight"], grown["fc1.weight"])
    # one more step: a new entry takes Adam's first step, -lr * g / (|g| + eps)
    start = p.detach().clone()
    optimizer.zero_grad()
    classification_loss(mlp, batches[0]).mean().backward()
    grad = p.grad.clone()
    optimizer.step()
    entries = new_index[fresh]
    expected = start.view(-1)[entries] - 1e-2 * grad.view(-1)[entries] / (grad.view(-1)[entries].abs() + 1e-8)
    torch.testing.assert_close(p.detach().view(-1)[entries], expected, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip_resumes_exactly(mlp):
    masks = masks_for(mlp, 0.3)
    batches = make_batches([4, 2], (6,))
    twin = copy.deepcopy(mlp)
    optimizer = MaskedAdamW(mlp.named_parameters(), masks, lr=1e-2, weight_decay=0.05)
    train(mlp, optimizer, batches, 4)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    twin.load_state_dict(mlp.state_dict())
    resumed = MaskedAdamW(twin.named_parameters(), {n: torch.zeros_like(m) for n, m in masks.items()},
                          lr=1e-2, weight_decay=0.05)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert all(torch.equal(resumed.masks[n], masks[n]) for n in masks)
    train(mlp, optimizer, batches, 3)
    train(twin, resumed, batches, 3)
    for (n, a), (_, b) in zip(mlp.named_parameters(), twin.named_parameters()):
        assert torch.equal(a, b), n


def test_per_group_lr_and_scheduler(mlp):
    masks = masks_for(mlp, 0.3)
    groups = [{"params": [(n, p) for n, p in mlp.named_parameters() if n.startswith("fc2")], "lr": 1e-2},
              {"params": [(n, p) for n, p in mlp.named_parameters() if n.startswith("fc1")], "lr": 1e-3}]
    optimizer = MaskedAdamW(groups, masks)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    train(mlp, optimizer, make_batches([4], (6,)), 1)
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [5e-3, 5e-4]


def test_bad_masks_are_errors(mlp):
    with pytest.raises(FisherTuneError, match="shape"):
        MaskedAdamW(mlp.named_parameters(), {"fc1.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(FisherTuneError, match="not given"):
        MaskedAdamW([("fc2.weight", mlp.fc2.weight)], {"fc1.weight": torch.ones(8, 6, dtype=torch.bool)})
    with pytest.raises(FisherTuneError, match="named parameters"):
        MaskedAdamW(mlp.parameters(), {})


def test_state_saved_with_int64_indices_resumes_compactly_and_identically(mlp):
    # optimiser checkpoints written before int32 indices hold int64 ones
    masks = masks_for(mlp, 0.3)
    batches = make_batches([4, 4], (6,))
    optimizer = MaskedAdamW(mlp.named_parameters(), masks, lr=1e-2)
    train(mlp, optimizer, batches, 3)
    state = copy.deepcopy(optimizer.state_dict())
    assert all(s["index"].dtype == torch.int32 for s in state["state"].values() if "index" in s)
    for s in state["state"].values():
        if "index" in s:
            s["index"] = s["index"].long()
    twin = copy.deepcopy(mlp)
    resumed = MaskedAdamW(twin.named_parameters(), masks, lr=1e-2)
    resumed.load_state_dict(state)
    assert all(s["index"].dtype == torch.int32 for s in resumed.state.values() if "index" in s)
    train(mlp, optimizer, batches, 3)
    train(twin, resumed, batches, 3)
    for (n, a), b in zip(mlp.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), n
