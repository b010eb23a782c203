"""The flat-buffer MaskedAdamW equals the per-tensor one it replaced (masked_adamw_reference.py) bit for bit:
several groups, mask growth, parameters without a gradient, and a state_dict round trip mid-run."""

import copy

import torch
from masked_adamw_reference import ReferenceMaskedAdamW
from tiny_models import TinyViT, classification_loss, make_batches

from fishertune import MaskedAdamW, select_topk


def vit_masks(model, ratio, seed):
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()
              if not n.startswith("head")}
    return select_topk(scores, ratio=ratio)


def groups(model):
    named = list(model.named_parameters())
    return [{"params": [(n, p) for n, p in named if n.startswith("head")], "lr": 3e-2},
            {"params": [(n, p) for n, p in named if n.startswith("blocks.0")], "lr": 1e-2,
             "weight_decay": 0.2},
            {"params": [(n, p) for n, p in named if not n.startswith(("head", "blocks.0"))]}]


def assert_models_equal(a, b):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n


def test_flat_masked_adamw_is_bit_identical_to_per_tensor_reference():
    torch.manual_seed(0)
    model = TinyViT()
    reference_model = copy.deepcopy(model)
    settings = dict(lr=5e-3, weight_decay=0.05, betas=(0.9, 0.99), eps=1e-8)
    masks = vit_masks(model, 0.1, seed=0)
    flat = MaskedAdamW(groups(model), masks, **settings)
    reference = ReferenceMaskedAdamW(groups(reference_model), masks, **settings)
    batches = make_batches([3, 3], (3, 8, 8))
    for step in range(12):
        if step == 5:  # growth: old entries keep their state, new ones start afresh
            grown = {n: m | vit_masks(model, 0.1, seed=1)[n] for n, m in masks.items()}
            flat.update_masks(grown)
            reference.update_masks(grown)
        if step == 8:  # resume from a saved state mid-run
            state = copy.deepcopy(flat.state_dict())
            flat = MaskedAdamW(groups(model), masks, **settings)
            flat.load_state_dict(state)
        for m, optimizer in ((model, flat), (reference_model, reference)):
            optimizer.zero_grad()
            classification_loss(m, batches[step % 2]).mean().backward()
            if step % 3 == 1:  # a masked tensor without gradient is skipped, its state untouched
                m.blocks[1].fc1.weight.grad = None
            optimizer.step()
        assert_models_equal(model, reference_model)
    k = sum(int(m.sum()) for m in flat.masks.values())
    assert flat.state_bytes() == reference.state_bytes() - 4 * k  # int32 indices instead of int64
    for p, q in zip(model.parameters(), reference_model.parameters()):
        for key, value in reference.state[q].items():
            assert torch.equal(flat.state[p][key], value), key


def test_state_dict_holds_separate_tensors():
    torch.manual_seed(0)
    model = TinyViT()
    optimizer = MaskedAdamW(model.named_parameters(), vit_masks(model, 0.2, seed=0))
    model.blocks[0].fc1.weight.grad = torch.ones_like(model.blocks[0].fc1.weight)
    optimizer.step()
    storages = {t.untyped_storage().data_ptr() for s in optimizer.state_dict()["state"].values()
                for t in s.values() if isinstance(t, torch.Tensor) and t.numel()}
    tensors = [t for s in optimizer.state_dict()["state"].values() for t in s.values()
               if isinstance(t, torch.Tensor) and t.numel()]
    assert len(storages) == len(tensors)  # no shared buffer: safetensors can store them
