"""One test body over the tuner registry: what trains, what stays bit-exact, counts, save/load."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, make_segmentor, segmentation_loss

from fishertune.errors import FisherTuneError
from fishertune.tuners import TUNERS, build_tuner, load_tuner
from fishertune.tuners.budget import SIZE_KNOBS, count_trainable, match_budget

# Tiny options per method, and which methods leave the backbone function unchanged at initialisation.
OPTIONS = {
    "full": {}, "frozen": {},
    "lora": dict(rank=2, target_mlp=True),
    "rein": dict(num_tokens=4, token_rank=2),
    "vpt": dict(num_prompts=3),
    "adaptformer": dict(bottleneck=4),
}
ZERO_INIT = {"lora", "rein", "adaptformer"}
ADDS_MODULES = {"lora", "rein", "vpt", "adaptformer"}
STEPS = 3


def test_every_registered_method_is_tested():
    assert set(OPTIONS) == set(TUNERS)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", sorted(TUNERS))
def test_tuner(method, family, batches, tmp_path):
    model = make_segmentor(family)
    if method == "vpt" and family == "sam":  # windowed attention over a fixed grid: no room for prompts
        with pytest.raises(FisherTuneError, match="VPT"):
            build_tuner(method, model, **OPTIONS[method])
        return
    x = batches[0]["image"]
    with torch.no_grad():
        base_out, base_features = model(x), model.backbone(x)[-1]
    base = {n: p for n, p in model.backbone.named_parameters()}
    base_values = {n: p.detach().clone() for n, p in base.items()}

    expected_count = count_trainable(method, make_segmentor(family), **OPTIONS[method])
    tuner = build_tuner(method, model, **OPTIONS[method])
    with torch.no_grad():
        init_out, init_features = model(x), model.backbone(x)[-1]
    assert init_out.shape == base_out.shape
    if method in ZERO_INIT:  # bit-exact features (the head may round differently on other memory layouts)
        assert torch.equal(init_features, base_features)

    tuner.prepare(batches, segmentation_loss)
    optimizer = tuner.build_optimizer(lr=1e-2, head_lr=1e-2, weight_decay=0.01)
    got_grad = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.backbone.named_parameters()}
    for step in range(STEPS):
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        segmentation_loss(model, batch).mean().backward()
        for n, p in model.backbone.named_parameters():
            if p.grad is not None:
                got_grad[n] |= p.grad != 0
        optimizer.step()
        tuner.after_step(step, STEPS, batches, segmentation_loss, optimizer)

    # Which backbone weights moved, entry by entry, against an independent expectation.
    moved = {n: p.detach() != base_values[n] for n, p in base.items()}
    added = {n: p for n, p in model.backbone.named_parameters() if all(p is not q for q in base.values())}
    if method in ("frozen",) or method in ADDS_MODULES:
        assert not any(m.any() for m in moved.values()), "base weights must stay bit-exact"
    if method == "frozen":
        assert tuner.num_trainable() == 0
        assert not any(p.requires_grad for p in model.backbone.parameters())
    if method == "full":
        for n, m in moved.items():
            assert torch.equal(m, got_grad[n]), n  # everything with a gradient moved
        assert tuner.num_trainable() == sum(p.numel() for p in base.values())
    if method in ADDS_MODULES:
        assert added and tuner.num_trainable() == sum(p.numel() for p in added.values())
        assert {n for n, p in model.backbone.named_parameters() if p.requires_grad} == set(added)
        assert any(got_grad[n].any() for n in added)

    with torch.no_grad():
        features_equal = torch.equal(model.backbone(x)[-1], base_features)
    assert features_equal == (method == "frozen")

    assert tuner.num_trainable() == expected_count

    # save -> load onto a fresh base with the trained head: same outputs, bit for bit.
    tuner.save_pretrained(str(tmp_path / "tuner"))
    fresh = make_segmentor(family)
    fresh.head.load_state_dict(model.head.state_dict())
    reloaded = load_tuner(str(tmp_path / "tuner"), fresh)
    assert type(reloaded) is type(tuner) and reloaded.num_trainable() == tuner.num_trainable()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_layer_wise_lr_decay_groups():
    model = make_segmentor()
    tuner = build_tuner("full", model, layer_decay=0.5)
    optimizer = tuner.build_optimizer(lr=1.0, head_lr=3.0, weight_decay=0.0)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    blocks = model.backbone.blocks
    top = len(blocks) + 1
    for i, block in enumerate(blocks):
        assert all(lr_of[id(p)] == 0.5 ** (top - (i + 1)) for p in block.parameters())
    assert all(lr_of[id(p)] == 0.5**top for p in model.backbone.model.embeddings.parameters())
    assert all(lr_of[id(p)] == 1.0 for p in model.backbone.model.layernorm.parameters())
    assert all(lr_of[id(p)] == 3.0 for p in model.head.parameters())
    assert len(lr_of) == sum(1 for _ in model.parameters())


def test_bad_options_are_one_clear_error():
    with pytest.raises(FisherTuneError, match="did you mean 'rank'"):
        build_tuner("lora", make_segmentor(), rnak=4)
    with pytest.raises(FisherTuneError, match="did you mean 'rein'"):
        build_tuner("reinn", make_segmentor())
    with pytest.raises(FisherTuneError, match="num_tokens"):
        build_tuner("rein", make_segmentor(), num_tokens=0)


def test_rein_refines_patch_tokens_only():
    model = make_segmentor()
    tuner = build_tuner("rein", model, num_tokens=4, token_rank=2)
    torch.nn.init.normal_(tuner.reins.mlp_out.weight)
    hidden = torch.randn(2, 1 + 16, 32)
    refined = tuner._refine(0, hidden)
    assert torch.equal(refined[:, :1], hidden[:, :1])
    assert not torch.isclose(refined[:, 1:], hidden[:, 1:]).any()
    assert tuner.query_tokens().shape == (4, 3 * 32)


def test_vpt_blocks_see_prompts_downstream_does_not():
    model = make_segmentor()
    seen = []
    build_tuner("vpt", model, num_prompts=3)
    model.backbone.blocks[1].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        out = model.backbone.model(pixel_values=torch.rand(1, 3, 32, 32)).last_hidden_state
    assert seen == [1 + 64 + 3] and out.shape[1] == 1 + 64


@pytest.mark.parametrize("method", sorted(SIZE_KNOBS))
def test_match_budget_picks_the_closest_adapter_size(method):
    model = make_segmentor()
    knob, low = SIZE_KNOBS[method]
    target = 5000
    chosen = match_budget(method, model, target, **{k: v for k, v in OPTIONS[method].items() if k != knob})
    k = chosen[knob]
    error = abs(count_trainable(method, model, **chosen) - target)
    for other in (k - 1, k + 1):
        if other >= low:
            assert error <= abs(count_trainable(method, model, **{**chosen, knob: other}) - target)
