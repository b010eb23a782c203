import dataclasses
import math

import pytest
import torch
from tiny_models import TinyViT, classification_loss, make_batches

from fishertune import FisherTuneConfig, FisherTuneError, FisherTuner, empirical_fisher, load_delta

BACKBONE = ["blocks.*"]


def train(tuner, optimizer, batches, steps):
    model = tuner.model.train()
    for step in range(steps):
        optimizer.zero_grad()
        classification_loss(model, batches[step % len(batches)]).mean().backward()
        optimizer.step()
        tuner.after_step(step, batches, classification_loss, optimizer)


def test_end_to_end_selection_training_and_delta(vit, tmp_path, capsys):
    base = {n: p.detach().clone() for n, p in vit.named_parameters()}
    batches = make_batches([3, 3], (3, 8, 8))
    config = FisherTuneConfig(ratio=0.1, include=BACKBONE, exclude=["*norm*"], perturb_layers=["blocks.0"])
    tuner = FisherTuner(vit, config)
    candidates = [n for n in base if n.startswith("blocks.") and "norm" not in n]
    assert tuner.candidates == candidates
    vit.train()
    scores = tuner.estimate(batches, classification_loss)
    assert vit.training and list(scores) == candidates
    assert tuner.draws["eps_mu"] > 0 and tuner.draws["eps_sigma"] > 0
    masks = tuner.select()
    n_candidates = sum(base[n].numel() for n in candidates)
    assert tuner.num_selected() == math.floor(0.1 * n_candidates + 0.5)
    assert tuner.history == [{"step": 0, "ratio": 0.1, "selected": tuner.num_selected()}]
    optimizer = tuner.build_optimizer(vit.named_parameters(), lr=1e-2, weight_decay=0.1)
    train(tuner, optimizer, batches, 6)
    for n, p in vit.named_parameters():
        if n in masks:
            assert torch.equal(p[~masks[n]], base[n][~masks[n]]), n
        elif not n.startswith("blocks."):
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
    config = FisherTuneConfig(ratio=0.2, ratio_min=0.02, growth_steps=4, update_every=2, include=BACKBONE,
                              selection="fim", per_sample=False)  # cheap Fisher keeps re-estimation fast
    tuner = FisherTuner(vit, config)
    tuner.estimate(batches, classification_loss)
    first = {n: m.clone() for n, m in tuner.select(0).items()}
    optimizer = tuner.build_optimizer(vit.named_parameters(), lr=1e-3)
    # growth may select any candidate later, so all candidates take gradients
    assert all(p.requires_grad for n, p in vit.named_parameters() if n in tuner.candidates)
    train(tuner, optimizer, batches, 6)
    counts = [h["selected"] for h in tuner.history]
    assert [h["step"] for h in tuner.history] == [0, 2, 4, 6]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    total = tuner.total_candidates
    assert counts == [math.floor(tuner.ratio_at(h["step"]) * total + 0.5) for h in tuner.history]
    assert all(not (first[n] & ~tuner.masks[n]).any() for n in first)
    assert all(torch.equal(optimizer.masks[n], tuner.masks[n]) for n in tuner.masks)
    resumed = FisherTuner(vit, config)
    resumed.load_state_dict(tuner.state_dict())
    assert all(torch.equal(resumed.masks[n], tuner.masks[n]) for n in tuner.masks)
    assert all(torch.equal(resumed.base_state()[n], tuner.base_state()[n]) for n in tuner.masks)


def test_selection_modes_share_the_budget(vit):
    batches = make_batches([3], (3, 8, 8))
    selected = {}
    for mode in ("fim", "random", "dr_fim"):
        config = FisherTuneConfig(count=500, include=BACKBONE, selection=mode, perturb_layers=["blocks.0"],
                                  alpha=0.0)
        tuner = FisherTuner(vit, config)
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


def test_variational_option_and_eval_mode_during_estimation(vit):
    modes = []
    vit.blocks[0].register_forward_pre_hook(lambda m, a: modes.append(m.training))
    batches = make_batches([2], (3, 8, 8))
    config = FisherTuneConfig(ratio=0.1, include=BACKBONE, selection="fim", variational=True, var_gamma=0.0,
                              var_beta=None)
    vit.train()
    scores = FisherTuner(vit, config).estimate(batches, classification_loss)
    assert modes and not any(modes) and vit.training
    plain = empirical_fisher(vit.eval(), batches, classification_loss, params=list(scores))
    for n in plain:
        torch.testing.assert_close(scores[n], plain[n], rtol=1e-5, atol=1e-10)


def test_config_errors_and_help(vit):
    for kwargs, message in [(dict(ratio=0.1, count=3), "exactly one"),
                            (dict(selection="fish"), "unknown selection"),
                            (dict(normalize="max"), "unknown normalize"), (dict(ratio=2.0), "ratio must be")]:
        with pytest.raises(FisherTuneError, match=message):
            FisherTuneConfig(**kwargs)
    assert all(f.metadata.get("help") for f in dataclasses.fields(FisherTuneConfig))
    tuner = FisherTuner(vit, FisherTuneConfig(ratio=0.1))
    with pytest.raises(FisherTuneError, match="needs perturb_layers"):
        tuner.estimate(make_batches([2], (3, 8, 8)), classification_loss)
    with pytest.raises(FisherTuneError, match="before select"):
        FisherTuner(vit, FisherTuneConfig(ratio=0.1)).select()
