"""One test body over the tuner registry: what trains, what stays bit-exact, counts, save/load."""

from __future__ import annotations

import copy

import pytest
import torch
from tuner_helpers import FAMILIES, make_segmentor, segmentation_loss

from fishertune.errors import FisherTuneError
from fishertune.method import read_delta_config
from fishertune.models import build_segmentor, tiny_backbone_config, tiny_head_config
from fishertune.tuners import TUNERS, build_tuner, config_help, load_tuner
from fishertune.tuners.budget import SIZE_KNOBS, count_trainable, match_budget
from fishertune.tuners.mask_methods import DELTA_FILE, MaskTuner

# Tiny options per method; fishertune also grows its mask (δ_min 5% -> ~10% after 3 steps).
OPTIONS = {
    "full": {}, "frozen": {},
    "lora": dict(rank=2, target_mlp=True),
    "rein": dict(num_tokens=4, token_rank=2),
    "vpt": dict(num_prompts=3),
    "adaptformer": dict(bottleneck=4),
    "childtune": dict(budget=0.1), "fish": dict(budget=0.1), "random": dict(budget=300),
    "fishertune": dict(budget=0.1, ratio_min=0.05, growth_steps=0.2, update_every=1, reestimate=False),
}
ZERO_INIT = {"lora", "rein", "adaptformer"}  # the backbone function is the base one at initialisation
ADDS_MODULES = {"lora", "rein", "vpt", "adaptformer"}
STEPS = 3


def test_every_registered_method_is_tested():
    assert set(OPTIONS) == set(TUNERS)


@pytest.mark.parametrize("method", sorted(TUNERS))
def test_every_option_has_help_text(method):
    lines = config_help(TUNERS[method].config_class).splitlines()
    assert all(line.split(": ", 1)[1].strip() for line in lines)


def may_train(tuner, name: str, p: torch.Tensor) -> torch.Tensor:
    """Entries of base weight `name` the method may update at this step (independent of its optimiser)."""
    if isinstance(tuner, MaskTuner):
        return tuner.masks[name].clone()
    return torch.full_like(p, tuner.name == "full", dtype=torch.bool)


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
    base = {n: p for n, p in model.named_parameters() if n.startswith("backbone.")}
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
    must_move = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in base.items()}
    may_move = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in base.items()}
    added_grad, added_without_grad = False, set()
    for step in range(STEPS):
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        segmentation_loss(model, batch).mean().backward()
        for n, p in base.items():
            allowed = may_train(tuner, n, p)
            may_move[n] |= allowed
            if p.grad is not None:
                must_move[n] |= allowed & (p.grad != 0)
        added_params = [(n, p) for n, p in model.named_parameters()
                        if n.startswith("backbone.") and n not in base]
        added_grad |= any(p.grad is not None and bool(p.grad.any()) for _, p in added_params)
        # a trainable added parameter without a gradient sits in a module the forward bypasses
        added_without_grad |= {n for n, p in added_params if p.requires_grad and p.grad is None}
        optimizer.step()
        tuner.after_step(step, STEPS, batches, segmentation_loss, optimizer)

    # Entry by entry: everything allowed with a gradient moved, nothing outside what was allowed did.
    moved_count = 0
    for n, p in base.items():
        moved = p.detach() != base_values[n]
        moved_count += int(moved.sum())
        assert not (must_move[n] & ~moved).any(), f"{n}: an entry with a gradient did not move"
        assert not (moved & ~may_move[n]).any(), f"{n}: an entry outside the method's reach moved"
    assert tuner.num_trainable() == expected_count
    added = {n: p for n, p in model.named_parameters()
             if n.startswith("backbone.") and all(p is not q for q in base.values())}
    if method == "frozen":
        assert tuner.num_trainable() == 0 and not any(p.requires_grad for p in model.backbone.parameters())
    if method == "full":
        assert tuner.num_trainable() == sum(p.numel() for p in base.values())
    if method in ADDS_MODULES:
        assert added and added_grad and tuner.num_trainable() == sum(p.numel() for p in added.values())
        assert not added_without_grad, f"added parameters without a gradient: {sorted(added_without_grad)}"
        assert {n for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad} \
            == set(added)
    if method in ("childtune", "fish", "random"):  # fixed masks: every selected entry moved (weight decay)
        assert moved_count == tuner.num_trainable()
    if isinstance(tuner, MaskTuner):
        assert not added
        assert tuner.num_trainable() == sum(int(m.sum()) for m in may_move.values())
        assert any(m.any() for m in must_move.values())
    with torch.no_grad():
        features_equal = torch.equal(model.backbone(x)[-1], base_features)
    assert features_equal == (method == "frozen")

    # save -> load onto a fresh base with the trained head: same outputs, bit for bit.
    tuner.save_pretrained(str(tmp_path / "tuner"))
    if isinstance(tuner, MaskTuner):  # only the selected entries are stored
        delta = read_delta_config(tmp_path / "tuner" / DELTA_FILE)
        assert sum(t["count"] for t in delta["tensors"].values()) == tuner.num_trainable()
    fresh = make_segmentor(family)
    fresh.head.load_state_dict(model.head.state_dict())
    reloaded = load_tuner(str(tmp_path / "tuner"), fresh)
    assert type(reloaded) is type(tuner) and reloaded.num_trainable() == tuner.num_trainable()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert all(torch.equal(p, fresh.state_dict()[n]) for n, p in model.state_dict().items())


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
    assert all(lr_of[id(p)] == 3.0 for p in model.head.parameters())
    assert len(lr_of) == sum(1 for _ in model.parameters())


def test_bad_options_are_one_clear_error():
    with pytest.raises(FisherTuneError, match="did you mean 'method.options.rank'"):
        build_tuner("lora", make_segmentor(), rnak=4)
    with pytest.raises(FisherTuneError, match="did you mean 'rein'"):
        build_tuner("reinn", make_segmentor())
    with pytest.raises(FisherTuneError, match="num_tokens"):
        build_tuner("rein", make_segmentor(), num_tokens=0)
    with pytest.raises(FisherTuneError, match="mask2former"):
        build_tuner("rein", make_segmentor(), link_queries=True)
    with pytest.raises(FisherTuneError, match="budget"):
        build_tuner("fish", make_segmentor(), budget=2.5)


def test_rein_refines_patch_tokens_only_by_its_formula():
    model = make_segmentor("dinov2_reg")
    tuner = build_tuner("rein", model, num_tokens=4, token_rank=2, scale_init=0.5)
    reins = tuner.reins
    torch.nn.init.normal_(reins.mlp_out.weight)
    prefix = model.backbone.num_prefix_tokens
    hidden = torch.randn(2, prefix + 16, 32)
    with torch.no_grad():
        refined = tuner._refine(1, hidden)
        # Reference, token by token: S = softmax(f·Tᵀ/√D); Δ = Σ_{j≥1} S_j·MLP_t2f(T_j); f + s·MLP_out(Δ + f)
        tokens = reins.tokens_a[1] @ reins.tokens_b[1]
        values = reins.mlp_token2feat(tokens)
        expected = hidden.clone()
        for b in range(2):
            for t in range(prefix, prefix + 16):
                f = hidden[b, t]
                logits = torch.stack([f @ tokens[j] for j in range(4)]) / 32**0.5
                weights = logits.exp() / logits.exp().sum()
                delta = sum(weights[j] * values[j] for j in range(1, 4))
                expected[b, t] = f + 0.5 * reins.mlp_out(delta + f)
    assert torch.equal(refined[:, :prefix], hidden[:, :prefix])
    torch.testing.assert_close(refined, expected)


@pytest.mark.parametrize("link", [False, True])
def test_rein_tokens_as_mask2former_queries(link, batches, tmp_path):
    """With link_queries the head decodes m more queries and the tokens learn through them (the
    zero-initialised output path gives them no gradient at the start otherwise)."""
    head = {"name": "mask2former", **tiny_head_config("mask2former")}
    model = make_segmentor(head=head)
    tuner = build_tuner("rein", model, num_tokens=4, token_rank=2, link_queries=link)
    assert tuner.num_trainable() == count_trainable("rein", make_segmentor(head=head), num_tokens=4,
                                                    token_rank=2, link_queries=link)
    images = batches[0]["image"]
    out = model.head(model.backbone(model.normalise(images)))
    assert out["class_logits"].shape[1] == tiny_head_config("mask2former")["num_queries"] + 4 * link
    tuner.build_optimizer(lr=1e-3, head_lr=1e-3, weight_decay=0.0)
    segmentation_loss(model, batches[0]).mean().backward()
    assert (tuner.reins.tokens_a.grad is not None and bool(tuner.reins.tokens_a.grad.any())) == link
    if link:
        tuner.save_pretrained(str(tmp_path / "rein"))
        fresh = make_segmentor(head=head)
        fresh.head.load_state_dict(model.head.state_dict())
        load_tuner(str(tmp_path / "rein"), fresh)
        with torch.no_grad():
            assert torch.equal(fresh(images), model(images))


def test_vpt_blocks_see_prompts_downstream_does_not():
    model = make_segmentor("dinov2_reg")
    prefix, seen = model.backbone.num_prefix_tokens, []
    build_tuner("vpt", model, num_prompts=3)
    model.backbone.blocks[1].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 3, 32, 32))
    assert seen == [prefix + 64 + 3] and features[-1].shape == (1, 32, 8, 8)


def test_fishertune_mask_grows_to_the_budget(batches):
    model = make_segmentor()
    tuner = build_tuner("fishertune", model, budget=0.1, ratio_min=0.02, growth_steps=1.0, update_every=1)
    tuner.prepare(batches, segmentation_loss)
    first = {n: m.clone() for n, m in tuner.masks.items()}
    optimizer = tuner.build_optimizer(lr=1e-3, head_lr=1e-3, weight_decay=0.0)
    tuner.after_step(0, 5, batches, segmentation_loss, optimizer)
    assert sum(int(m.sum()) for m in first.values()) < tuner.num_trainable() <= tuner.count_trainable(
        model, tuner.config)
    assert all(not (first[n] & ~tuner.masks[n]).any() for n in first)  # grows, never drops


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


def _train(model, tuner, optimizer, batches, steps):
    for step in steps:
        optimizer.zero_grad()
        segmentation_loss(model, batches[step % len(batches)]).mean().backward()
        optimizer.step()
        tuner.after_step(step, 4, batches, segmentation_loss, optimizer)


@pytest.mark.parametrize("method", sorted(TUNERS))
def test_resume_from_state_dicts_continues_exactly(method, batches):
    """The engine's resume: model, optimiser and tuner state restored onto a fresh build, no prepare."""
    model = make_segmentor()
    tuner = build_tuner(method, model, **OPTIONS[method])
    tuner.prepare(batches, segmentation_loss)
    optimizer = tuner.build_optimizer(lr=1e-2, head_lr=1e-2, weight_decay=0.01)
    _train(model, tuner, optimizer, batches, range(2))
    saved = {"model": {k: v.clone() for k, v in model.state_dict().items()},
             "optimizer": copy.deepcopy(optimizer.state_dict()), "tuner": copy.deepcopy(tuner.state_dict())}
    _train(model, tuner, optimizer, batches, range(2, 4))

    fresh = make_segmentor()
    resumed = build_tuner(method, fresh, **OPTIONS[method])
    fresh.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["tuner"])
    fresh_optimizer = resumed.build_optimizer(lr=1e-2, head_lr=1e-2, weight_decay=0.01)
    fresh_optimizer.load_state_dict(saved["optimizer"])
    _train(fresh, resumed, fresh_optimizer, batches, range(2, 4))
    assert resumed.num_trainable() == tuner.num_trainable()
    assert all(torch.equal(p, fresh.state_dict()[n]) for n, p in model.state_dict().items())


def test_a_saved_delta_refuses_another_base(batches, tmp_path):
    model = make_segmentor()
    tuner = build_tuner("fish", model, budget=0.05)
    tuner.prepare(batches, segmentation_loss)
    optimizer = tuner.build_optimizer(lr=1e-2, head_lr=1e-2, weight_decay=0.0)
    _train(model, tuner, optimizer, batches, range(1))
    tuner.save_pretrained(str(tmp_path / "fish"))
    other = make_segmentor(seed=1)
    with pytest.raises(FisherTuneError, match="different base"):
        load_tuner(str(tmp_path / "fish"), other)
    with pytest.raises(FisherTuneError, match="no saved tuner"):
        load_tuner(str(tmp_path / "nothing"), other)


@pytest.mark.parametrize("method", ["lora", "rein", "adaptformer"])
def test_adapters_refuse_a_backbone_of_another_width(method, tmp_path):
    build_tuner(method, make_segmentor(), **OPTIONS[method]).save_pretrained(str(tmp_path / method))
    torch.manual_seed(0)
    config = {**tiny_backbone_config("dinov2"), "hidden_size": 48}
    wider = build_segmentor({"name": "dinov2", "config": config}, "linear")
    with pytest.raises(FisherTuneError, match="do not fit|has shape"):
        load_tuner(str(tmp_path / method), wider)
