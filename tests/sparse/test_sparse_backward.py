"""Structure-aware sparse backward: the row-sparse Linear equals dense autograd on the selected rows, and
freezing the tensors with nothing selected leaves training unchanged while skipping their backward."""


import pytest
import torch
from tiny_models import TinyViT, classification_loss, make_batches
from torch import nn

from fishertune import MaskSelector, MaskSelectorConfig
from fishertune.sparse.sparse_linear import RowSparseLinear, RowSparseLinearFunction, RowSparseLinears


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7)])
def test_row_sparse_linear_equals_dense_autograd_on_its_rows(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, requires_grad=True)
    weight = torch.randn(6, 7, generator=g, requires_grad=True)
    bias = torch.randn(6, generator=g, requires_grad=True)
    upstream = torch.randn(*shape[:-1], 6, generator=g)
    rows = torch.tensor([1, 4])
    dense = torch.autograd.grad((nn.functional.linear(x, weight, bias) * upstream).sum(), [x, weight, bias])
    out = RowSparseLinearFunction.apply(x, weight, bias, rows)
    assert torch.equal(out, nn.functional.linear(x, weight, bias))
    sparse = torch.autograd.grad((out * upstream).sum(), [x, weight, bias])
    torch.testing.assert_close(sparse[0], dense[0], rtol=1e-6, atol=1e-6)  # input gradient in full
    torch.testing.assert_close(sparse[2], dense[2], rtol=1e-6, atol=1e-6)  # bias gradient in full
    torch.testing.assert_close(sparse[1][rows], dense[1][rows], rtol=1e-6, atol=1e-6)
    others = torch.ones(6, dtype=torch.bool)
    others[rows] = False
    assert torch.equal(sparse[1][others], torch.zeros(4, 7))


def test_layers_switch_with_the_masks_and_keep_their_names():
    model = TinyViT()
    names = [n for n, _ in model.named_parameters()]
    fc1 = model.blocks[0].fc1
    mask = torch.zeros_like(fc1.weight, dtype=torch.bool)
    mask[3, :2] = True
    switch = RowSparseLinears(model)
    assert switch.update({"blocks.0.fc1.weight": mask}) == ["blocks.0.fc1"]
    assert type(fc1) is RowSparseLinear and fc1.sparse_rows.tolist() == [3]
    assert [n for n, _ in model.named_parameters()] == names
    assert switch.update({"blocks.0.fc1.weight": torch.ones_like(mask)}) == []  # every row: dense again
    assert type(fc1) is nn.Linear


def run(config, batches, steps=4, dense_reference=False):
    torch.manual_seed(0)
    model = TinyViT()
    tuner = MaskSelector(model, config)
    tuner.estimate(batches, classification_loss)
    tuner.select(0)
    optimizer = tuner.build_optimizer(model.named_parameters(), lr=1e-2)
    params = dict(model.named_parameters())
    for step in range(steps):
        if dense_reference:  # the earlier behaviour: every candidate takes a dense gradient
            RowSparseLinears(model).update({})
            for n in tuner.candidates:
                params[n].requires_grad_(True)
        optimizer.zero_grad()
        classification_loss(model.train(), batches[step % len(batches)]).mean().backward()
        optimizer.step()
        tuner.after_step(step, None, batches, classification_loss, optimizer)
    return model, tuner


def test_row_granularity_training_equals_dense_backward():
    batches = make_batches([3, 3], (3, 8, 8))
    config = MaskSelectorConfig(ratio=0.1, include=["blocks.*"], granularity="row", score="fim",
                                ratio_min=0.05, growth_steps=2, update_every=2, per_sample=False)
    sparse, tuner = run(config, batches)
    dense, dense_tuner = run(config, batches, dense_reference=True)
    assert any(type(m) is RowSparseLinear for m in sparse.modules())
    assert all(torch.equal(tuner.masks[n], dense_tuner.masks[n]) for n in tuner.masks)
    for (n, p), q in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


def test_frozen_unselected_tensors_train_bit_identically_and_skip_lower_blocks():
    batches = make_batches([3, 3], (3, 8, 8))
    config = MaskSelectorConfig(ratio=0.2, include=["blocks.1.*"], score="fim", per_sample=False)
    frozen, tuner = run(config, batches)
    dense, _ = run(config, batches, dense_reference=True)
    for (n, p), q in zip(frozen.named_parameters(), dense.parameters()):
        assert torch.equal(p, q), n
    params = dict(frozen.named_parameters())
    assert all(params[n].requires_grad == bool(tuner.masks[n].any()) for n in tuner.candidates)
    # block 0 holds nothing selected and nothing below it trains (non-candidates frozen, as the mask tuners
    # freeze the backbone): it runs without autograd
    for n, p in params.items():
        if n not in tuner.candidates:
            p.requires_grad_(False)
    outputs = {}
    for i, block in enumerate(frozen.blocks):
        block.register_forward_hook(lambda m, a, out, i=i: outputs.update({i: out.requires_grad}))
    classification_loss(frozen, batches[0])
    assert outputs == {0: False, 1: True}
