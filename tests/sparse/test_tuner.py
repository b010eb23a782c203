import dataclasses
import math

import pytest
import torch
from tiny_models import TinyViT, classification_loss, make_batches

from fishertune import (
    FisherTuneError,
    MaskSelector,
    MaskSelectorConfig,
    empirical_fisher,
    grow_masks,
    load_delta,
)
from fishertune.sparse.dr_fim import normalize_term

BACKBONE = ["blocks.*"]


def train(tuner, optimizer, batches, steps):
    model = tuner.model.train()
    for step in range(steps):
        optimizer.zero_grad()
        classification_loss(model, batches[step % len(batches)]).mean().backward()
        optimizer.step()
        tuner.after_step(step, steps, batches, classification_loss, optimizer)


def test_end_to_end_selection_training_and_delta(vit, tmp_path, capsys):
    base = {n: p.detach().clone() for n, p in vit.named_parameters()}
    batches = make_batches([3, 3], (3, 8, 8))
    config = MaskSelectorConfig(ratio=0.1, include=BACKBONE, exclude=["*norm*"], perturb_layers=["blocks.0"])
    tuner = MaskSelector(vit, config)
    candidates = [n for n in base if n.startswith("blocks.") and "norm" not in n]
    assert tuner.candidates == candidates
    vit.train()
    scores = tuner.estimate(batches, classification_loss)
    assert vit.training and list(scores) == candidates
    assert len(tuner.draws) == len(batches)  # one signed draw and weight per batch (Algorithm 1)
    for d in tuner.draws:
        assert d["weight"] == pytest.approx(math.exp(-(d["eps_mu"] + d["eps_sigma"])))
        assert d["abs_mu"] > abs(d["eps_mu"]) and d["abs_sigma"] > abs(d["eps_sigma"])
    assert tuner.draws[0]["weight"] != tuner.draws[1]["weight"]
    masks = tuner.select()
    n_candidates = sum(base[n].numel() for n in candidates)
    assert tuner.num_selected() == math.floor(0.1 * n_candidates + 0.5)
    assert tuner.history == [{"step": 0, "ratio": 0.1, "selected": tuner.num_selected()}]
    optimizer = tuner.build_optimizer(vit.named_parameters(), lr=1e-2, weight_decay=0.1)
    train(tuner, optimizer, batches, 6)
    for n, p in vit.named_parameters():
        if n in masks:
            assert torch.equal(p[~masks[n]], base[n][~masks[n]]), n
        elif n.startswith("blocks."):  # excluded (never selected): frozen
            assert "norm" in n and torch.equal(p, base[n]) and not p.requires_grad, n
        else:
            assert not torch.equal(p, base[n]) or n in ("cls_token",), n  # dense params train
    assert all(torch.equal(tuner.base_state()[n], base[n]) for n in tuner.base_state())
    tuner.save_delta(tmp_path / "delta.safetensors")
    fresh = TinyViT()
    fresh.load_state_dict(base)
    load_delta(fresh, tmp_path / "delta.safetensors")
    for n, p in fresh.named_parameters():
        assert torch.equal(p, dict(vit.named_parameters())[n] if n in masks else base[n]), n
    tuner.print_trainable_parameters()
    out = capsys.readouterr().out
    assert f"selected params: {tuner.num_selected():,}" in out and f"{n_candidates:,}" in out


def test_growth_reestimation_and_resume(vit):
    batches = make_batches([2, 2], (3, 8, 8))
    config = MaskSelectorConfig(ratio=0.2, ratio_min=0.02, growth_steps=4, update_every=2, include=BACKBONE,
                                score="fim", per_sample=False)  # cheap Fisher keeps re-estimation fast
    tuner = MaskSelector(vit, config)
    tuner.estimate(batches, classification_loss)
    first = {n: m.clone() for n, m in tuner.select(0).items()}
    optimizer = tuner.build_optimizer(vit.named_parameters(), lr=1e-3)
    # only tensors with a selected entry take gradients; growth turns others on when they gain one
    params = dict(vit.named_parameters())
    assert all(params[n].requires_grad == bool(tuner.masks[n].any()) for n in tuner.candidates)
    assert not all(params[n].requires_grad for n in tuner.candidates)
    train(tuner, optimizer, batches, 6)
    assert all(params[n].requires_grad == bool(tuner.masks[n].any()) for n in tuner.candidates)
    counts = [h["selected"] for h in tuner.history]
    assert [h["step"] for h in tuner.history] == [0, 2, 4]  # none after the last step: it would not train
    assert counts == sorted(counts) and counts[0] < counts[-1]
    total = tuner.total_candidates
    assert counts == [math.floor(tuner.ratio_at(h["step"]) * total + 0.5) for h in tuner.history]
    assert all(not (first[n] & ~tuner.masks[n]).any() for n in first)
    assert all(torch.equal(optimizer.masks[n], tuner.masks[n]) for n in tuner.masks)
    resumed = MaskSelector(vit, config)
    resumed.load_state_dict(tuner.state_dict())
    assert all(torch.equal(resumed.masks[n], tuner.masks[n]) for n in tuner.masks)
    assert all(torch.equal(resumed.base_state()[n], tuner.base_state()[n]) for n in tuner.masks)


def test_selection_modes_share_the_budget(vit):
    batches = make_batches([3], (3, 8, 8))
    selected = {}
    for mode in ("fim", "random", "dr_fim", "delta_f"):
        config = MaskSelectorConfig(count=500, include=BACKBONE, score=mode, perturb_layers=["blocks.0"],
                                    alpha=0.0)
        tuner = MaskSelector(vit, config)
        scores = tuner.estimate(batches, classification_loss)
        if mode == "fim":
            plain = empirical_fisher(vit, batches, classification_loss, params=tuner.candidates)
            assert all(torch.equal(scores[n], plain[n]) for n in plain)
        tuner.select()
        assert tuner.num_selected() == 500
        selected[mode] = tuner.masks
    # α = 0: no perturbation, so DR-FIM selects exactly what FIM selects; random differs
    assert all(torch.equal(selected["dr_fim"][n], selected["fim"][n]) for n in selected["fim"])
    assert any(not torch.equal(selected["random"][n], selected["fim"][n]) for n in selected["fim"])


@pytest.mark.parametrize("variational", ["off", "vogn", "ivon"])
def test_zero_perturbation_gives_the_task_term(vit, variational):
    """α = 0: the perturbed curvature is the clean one (same weight samples), every domain term is 0."""
    batches = make_batches([3, 2], (3, 8, 8))
    scores = {}
    for selection in ("dr_fim", "delta_f"):
        config = MaskSelectorConfig(count=50, include=BACKBONE, score=selection, alpha=0.0,
                                    perturb_layers=["blocks.0"], variational=variational, var_tau=1e-2,
                                    var_gamma=1e-2)
        tuner = MaskSelector(vit, config)
        scores[selection] = tuner.estimate(batches, classification_loss)
        task = normalize_term(torch.cat([tuner.fisher[n].reshape(-1) for n in tuner.candidates]), "mean")
        assert all(torch.equal(tuner.fisher[n], tuner.fisher_perturbed[n]) for n in tuner.candidates)
    assert torch.equal(torch.cat([scores["dr_fim"][n].reshape(-1) for n in tuner.candidates]), task)
    assert all(not s.any() for s in scores["delta_f"].values())


def test_random_scores_and_draws_follow_the_seed(vit):
    batches = make_batches([2], (3, 8, 8))
    masks, draws = {}, {}
    for seed in (0, 0, 1):
        for selection in ("random", "dr_fim"):
            tuner = MaskSelector(vit, MaskSelectorConfig(count=40, include=BACKBONE, score=selection,
                                                         perturb_layers=["blocks.0"], seed=seed))
            tuner.estimate(batches, classification_loss)
            masks.setdefault(selection, []).append(tuner.select())
            draws.setdefault(selection, []).append(tuner.draws)
    same = lambda a, b: all(torch.equal(a[n], b[n]) for n in a)  # noqa: E731
    assert same(masks["random"][0], masks["random"][1]) and not same(masks["random"][0], masks["random"][2])
    assert draws["dr_fim"][0] == draws["dr_fim"][1] != draws["dr_fim"][2]


def test_variational_option_and_eval_mode_during_estimation(vit):
    modes = []
    vit.blocks[0].register_forward_pre_hook(lambda m, a: modes.append(m.training))
    batches = make_batches([2], (3, 8, 8))
    config = MaskSelectorConfig(ratio=0.1, include=BACKBONE, score="fim", variational="vogn",
                                var_gamma=0.0)
    vit.train()
    scores = MaskSelector(vit, config).estimate(batches, classification_loss)
    assert modes and not any(modes) and vit.training
    plain = empirical_fisher(vit.eval(), batches, classification_loss, params=list(scores))
    for n in plain:
        torch.testing.assert_close(scores[n], plain[n], rtol=1e-5, atol=1e-10)


def test_config_errors_and_help(vit):
    for kwargs, message in [(dict(ratio=0.1, count=3), "exactly one"),
                            (dict(score="fish"), "unknown score"),
                            (dict(normalize="max"), "unknown normalize"), (dict(ratio=2.0), "ratio must be"),
                            (dict(variational=True), "unknown variational"),
                            (dict(domain_weight="abs"), "unknown domain_weight"),
                            (dict(growth_steps=-1), "growth_steps must be >= 0"),
                            (dict(var_samples=0), "var_samples must be >= 1"),
                            (dict(chunk_size=0), "chunk_size must be >= 1"),
                            (dict(eps_ratio=0.0), "eps_ratio must be > 0"),
                            (dict(alpha=-0.5), "alpha must be >= 0"),
                            (dict(max_per_tensor=1.5), "max_per_tensor must be <= 1"),
                            (dict(ratio=0.05, ratio_min=0.1), "ratio_min must be in")]:
        with pytest.raises(FisherTuneError, match=message):
            MaskSelectorConfig(**kwargs)
    assert all(f.metadata.get("help") for f in dataclasses.fields(MaskSelectorConfig))
    tuner = MaskSelector(vit, MaskSelectorConfig(ratio=0.1))
    with pytest.raises(FisherTuneError, match="needs perturb_layers"):
        tuner.estimate(make_batches([2], (3, 8, 8)), classification_loss)
    with pytest.raises(FisherTuneError, match="before select"):
        MaskSelector(vit, MaskSelectorConfig(ratio=0.1)).select()


def test_running_reestimate_is_the_mean_squared_gradient_it_saw(vit):
    batches = make_batches([3, 3, 3], (3, 8, 8))
    config = MaskSelectorConfig(ratio=0.2, ratio_min=0.05, growth_steps=3, update_every=3,
                                reestimate="running", include=BACKBONE, granularity="row",
                                perturb_layers=["blocks.0"])
    tuner = MaskSelector(vit, config)
    tuner.estimate(batches[:2], classification_loss)
    tuner.select(step=0)
    optimizer = tuner.build_optimizer(vit.named_parameters(), lr=1e-2)
    params = dict(vit.named_parameters())
    # every candidate computes its whole weight gradient (row-sparse backward off): unselected entries count
    assert all(params[n].requires_grad for n in tuner.candidates)
    seen = {n: [] for n in tuner.candidates}
    exact_before = tuner._estimates
    vit.train()
    for step in range(3):
        optimizer.zero_grad()
        classification_loss(vit, batches[step]).mean().backward()
        optimizer.step()
        for n in tuner.candidates:
            seen[n].append(params[n].grad.detach().clone())
        old = {n: m.clone() for n, m in tuner.masks.items()}
        tuner.after_step(step, 10, batches, classification_loss, optimizer)
    assert tuner._estimates == exact_before  # no exact estimate at the update
    for n in tuner.candidates:  # brute force: the mean over the 3 steps of the squared minibatch gradient
        expected = torch.stack([g.square() for g in seen[n]]).mean(0)
        torch.testing.assert_close(tuner.scores[n], expected, rtol=1e-6, atol=0)
    assert tuner.running_steps == 0 and not tuner.running_sum  # restarted after the update
    assert tuner.history[-1]["selected"] > tuner.history[0]["selected"]
    expected_masks = grow_masks(old, tuner.scores, tuner.ratio_at(3), granularity="row")
    assert all(torch.equal(tuner.masks[n], expected_masks[n]) for n in tuner.candidates)


def test_running_reestimate_skips_nonfinite_steps_and_resumes(vit):
    config = MaskSelectorConfig(ratio=0.2, update_every=5, reestimate="running", include=BACKBONE,
                                score="fim")
    tuner = MaskSelector(vit, config)
    params = dict(vit.named_parameters())
    for value in (1.0, float("inf"), 3.0):
        for n in tuner.candidates:
            params[n].grad = torch.full_like(params[n], value)
        tuner.record_gradients()
    assert tuner.running_steps == 2  # the step with an infinite gradient is not counted
    twin = MaskSelector(vit, config)
    twin.load_state_dict(tuner.state_dict())
    scores = twin.take_running_scores()
    assert all(torch.equal(scores[n], torch.full_like(params[n], 5.0)) for n in tuner.candidates)  # (1+9)/2
    assert MaskSelectorConfig(reestimate=True).reestimate == "exact"
    assert MaskSelectorConfig(reestimate=False).reestimate == "off"
    with pytest.raises(FisherTuneError, match="running"):
        MaskSelectorConfig(reestimate="running", score="random")
    with pytest.raises(FisherTuneError, match="reestimate"):
        MaskSelectorConfig(reestimate="sometimes")
