"""The tuner registry under one case table (PEFT's TEST_CASES style): each method trained once per backbone
family, then small checks of what trains, what stays bit-exact, counts, save/load."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from tuner_helpers import FAMILIES, make_batches, make_segmentor, segmentation_loss

from fishertune.errors import FisherTuneError
from fishertune.models import build_segmentor, tiny_backbone_config, tiny_head_config
from fishertune.sparse import read_delta_config
from fishertune.tuners import TUNERS, build_tuner, config_help, load_tuner
from fishertune.tuners.budget import SIZE_KNOBS, count_trainable, match_budget
from fishertune.tuners.mask_methods import DELTA_FILE, MaskTuner


@dataclass(frozen=True)
class Case:
    """One registered method under the shared checks: its tiny options and what it trains."""

    method: str
    options: dict
    trains: Literal["nothing", "everything", "added", "mask"]
    """the backbone's weights it updates: none, all, only parameters it adds, or masked base entries"""
    zero_init: bool = False
    """the backbone function is the base one at initialisation (bit-exact features)"""
    fixed_mask: bool = False
    """a mask chosen once: every selected entry moves (weight decay moves those without a gradient)"""


# Tiny options per method; fishertune also grows its mask (δ_min 5% -> ~10% after 3 steps).
TEST_CASES = [
    Case("full", {}, "everything"),
    Case("frozen", {}, "nothing"),
    Case("lora", dict(rank=2, target_mlp=True), "added", zero_init=True),
    Case("rein", dict(num_tokens=4, token_rank=2), "added", zero_init=True),
    Case("vpt", dict(num_prompts=3), "added"),
    Case("adaptformer", dict(bottleneck=4), "added", zero_init=True),
    Case("childtune", dict(budget=0.1), "mask", fixed_mask=True),
    Case("fish", dict(budget=0.1), "mask", fixed_mask=True),
    Case("random", dict(budget=300), "mask", fixed_mask=True),
    Case("fishertune", dict(budget=0.1, ratio_min=0.05, growth_steps=0.2, update_every=1, reestimate=False),
         "mask"),
]
OPTIONS = {case.method: case.options for case in TEST_CASES}
STEPS = 3


def test_every_registered_method_is_tested():
    assert set(OPTIONS) == set(TUNERS)


@pytest.mark.parametrize("method", sorted(TUNERS))
def test_every_option_has_help_text(method):
    lines = config_help(TUNERS[method].config_class).splitlines()
    assert all(line.split(": ", 1)[1].strip() for line in lines)


def may_train(tuner, name: str, p: torch.Tensor) -> torch.Tensor:
    """Entries of base weight `name` the method may update at this step (independent of its optimiser)."""
    if isinstance(tuner, MaskTuner):  # a weight that is not a candidate (e.g. excluded) never trains
        return tuner.masks[name].clone() if name in tuner.masks else torch.zeros_like(p, dtype=torch.bool)
    return torch.full_like(p, tuner.name == "full", dtype=torch.bool)


@dataclass
class Trained:
    """A tuner after STEPS steps on a tiny segmentor, with what the checks compare against."""

    case: Case
    family: str
    model: torch.nn.Module
    tuner: object
    x: torch.Tensor
    base_out: torch.Tensor
    base_features: torch.Tensor
    init_out: torch.Tensor
    init_features: torch.Tensor
    base: dict  # the backbone's base parameters (trained in place)
    base_values: dict  # their values before training
    expected_count: int  # count_trainable on a fresh model
    must_move: dict  # entries that were allowed and had a gradient at some step
    may_move: dict  # entries that were allowed at some step
    added_grad: bool  # some added parameter got a non-zero gradient
    added_without_grad: set  # trainable added parameters that never got a gradient

    @property
    def added(self) -> dict:
        return {n: p for n, p in self.model.named_parameters()
                if n.startswith("backbone.") and all(p is not q for q in self.base.values())}


def train_case(case: Case, family: str) -> Trained:
    batches = make_batches()
    model = make_segmentor(family)
    x = batches[0]["image"]
    with torch.no_grad():
        base_out, base_features = model(x), model.backbone(x)[-1]
    base = {n: p for n, p in model.named_parameters() if n.startswith("backbone.")}
    base_values = {n: p.detach().clone() for n, p in base.items()}
    expected_count = count_trainable(case.method, make_segmentor(family), **case.options)
    tuner = build_tuner(case.method, model, **case.options)
    with torch.no_grad():
        init_out, init_features = model(x), model.backbone(x)[-1]
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
    return Trained(case, family, model, tuner, x, base_out, base_features, init_out, init_features, base,
                   base_values, expected_count, must_move, may_move, added_grad, added_without_grad)


_TRAINED: dict[tuple[str, str], Trained] = {}


def trained_case(case: Case, family: str) -> Trained:
    """Trained once per (method, family) and shared by the checks below, which only read it."""
    if (case.method, family) not in _TRAINED:
        _TRAINED[case.method, family] = train_case(case, family)
    return _TRAINED[case.method, family]


def cases(trains: tuple[str, ...] = ("nothing", "everything", "added", "mask")) -> list:
    """(case, family) parameters for the cases that train `trains`, every family but the one combination
    that cannot be built (test_vpt_refuses_sam)."""
    out = []
    for case in TEST_CASES:
        for family in FAMILIES:
            name, marks = (family.values[0], family.marks) if hasattr(family, "values") else (family, ())
            if case.trains in trains and not (case.method == "vpt" and name == "sam"):
                out.append(pytest.param(case, name, id=f"{case.method}-{name}", marks=marks))
    return out


def test_vpt_refuses_sam():
    """SAM's windowed attention runs over a fixed grid: there is no room for prompts."""
    with pytest.raises(FisherTuneError, match="VPT"):
        build_tuner("vpt", make_segmentor("sam"), **OPTIONS["vpt"])


@pytest.mark.parametrize(("case", "family"), cases())
def test_wrapping_keeps_the_output_shape(case, family):
    trained = trained_case(case, family)
    assert trained.init_out.shape == trained.base_out.shape
    if trained.case.zero_init:  # bit-exact features (the head may round differently on other memory layouts)
        assert torch.equal(trained.init_features, trained.base_features)


@pytest.mark.parametrize(("case", "family"), cases())
def test_what_moved_is_exactly_what_the_method_allowed(case, family):
    """Entry by entry: everything allowed with a gradient moved, nothing outside what was allowed did."""
    trained = trained_case(case, family)
    moved_count = 0
    for n, p in trained.base.items():
        moved = p.detach() != trained.base_values[n]
        moved_count += int(moved.sum())
        assert not (trained.must_move[n] & ~moved).any(), f"{n}: an entry with a gradient did not move"
        assert not (moved & ~trained.may_move[n]).any(), f"{n}: an entry outside the method's reach moved"
    if trained.case.fixed_mask:
        assert moved_count == trained.tuner.num_trainable()


@pytest.mark.parametrize(("case", "family"), cases())
def test_trainable_count(case, family):
    trained = trained_case(case, family)
    tuner, model = trained.tuner, trained.model
    assert tuner.num_trainable() == trained.expected_count
    assert isinstance(tuner, MaskTuner) == (case.trains == "mask")
    if case.trains == "nothing":
        assert tuner.num_trainable() == 0 and not any(p.requires_grad for p in model.backbone.parameters())
    if case.trains == "everything":
        assert tuner.num_trainable() == sum(p.numel() for p in trained.base.values())


@pytest.mark.parametrize(("case", "family"), cases(("added",)))
def test_adapters_train_their_own_parameters_only(case, family):
    trained = trained_case(case, family)
    added = trained.added
    assert added and trained.added_grad
    assert trained.tuner.num_trainable() == sum(p.numel() for p in added.values())
    assert not trained.added_without_grad, \
        f"added parameters without a gradient: {sorted(trained.added_without_grad)}"
    assert {n for n, p in trained.model.named_parameters() if n.startswith("backbone.") and p.requires_grad} \
        == set(added)


@pytest.mark.parametrize(("case", "family"), cases(("mask",)))
def test_mask_methods_train_their_mask_only(case, family):
    trained = trained_case(case, family)
    assert not trained.added
    assert trained.tuner.num_trainable() == sum(int(m.sum()) for m in trained.may_move.values())
    assert any(m.any() for m in trained.must_move.values())


@pytest.mark.parametrize(("case", "family"), cases())
def test_features_change_unless_frozen(case, family):
    trained = trained_case(case, family)
    with torch.no_grad():
        features_equal = torch.equal(trained.model.backbone(trained.x)[-1], trained.base_features)
    assert features_equal == (trained.case.method == "frozen")


@pytest.mark.parametrize(("case", "family"), cases())
def test_save_and_load_reproduce_the_model_bit_for_bit(case, family, tmp_path):
    """save -> load onto a fresh base with the trained head: same outputs, bit for bit."""
    trained = trained_case(case, family)
    tuner, model = trained.tuner, trained.model
    tuner.save_pretrained(str(tmp_path / "tuner"))
    if isinstance(tuner, MaskTuner):  # only the selected entries are stored
        delta = read_delta_config(tmp_path / "tuner" / DELTA_FILE)
        assert sum(t["count"] for t in delta["tensors"].values()) == tuner.num_trainable()
    fresh = make_segmentor(trained.family)
    fresh.head.load_state_dict(model.head.state_dict())
    reloaded = load_tuner(str(tmp_path / "tuner"), fresh)
    assert type(reloaded) is type(tuner) and reloaded.num_trainable() == tuner.num_trainable()
    with torch.no_grad():
        assert torch.equal(fresh(trained.x), model(trained.x))
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
