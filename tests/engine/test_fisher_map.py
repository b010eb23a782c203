"""`fisher_map` (what `fishertune fisher` writes) on a tiny random model, checked against the formulas of
docs/method.md recomputed here and against a brute-force per-image Fisher."""

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from trainer_helpers import synth_source, tiny_run_config

from fishertune.engine.fisher_map import fisher_map
from fishertune.engine.trainer import Trainer
from fishertune.errors import FisherTuneError
from fishertune.tuners.fishertune import FisherTuneTunerConfig

RATIO = 0.05
pytestmark = pytest.mark.slow  # one fisher_map run (about 25 s on 2 busy cores) serves the module


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return synth_source(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def written(source, tmp_path_factory):
    """fisher_map of a 1-batch estimate on the plain Fisher with mean normalisation: with one batch, DR-FIM
    follows from A, A' and the draw alone (the shipped estimate is checked below)."""
    config = tiny_run_config(source, options={"budget": RATIO, "perturb_layers": [0], "variational": "off",
                                              "normalize": "mean", "growth_start": None}, warmup_steps=2)
    out = tmp_path_factory.mktemp("fisher") / "map"
    paths = fisher_map(config, out, progress=False)
    return config, out, paths


def by_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        prefix, name = key.split("/", 1)
        out.setdefault(prefix, {})[name] = value
    return out


def test_it_writes_every_file_and_only_backbone_candidates(written):
    _, out, paths = written
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    assert all(p.stat().st_size > 0 for p in paths)
    parts = by_prefix(load_file(out / "scores.safetensors"))
    assert sorted(parts) == ["dr_fim", "fisher", "fisher_perturbed", "mask"]
    names = set(parts["dr_fim"])
    assert names and all(n.startswith("backbone.") for n in names)  # the head is never a candidate
    assert all(set(part) == names for part in parts.values())


def test_the_masks_are_the_exact_top_k_of_the_scores(written):
    _, out, _ = written
    parts = by_prefix(load_file(out / "scores.safetensors"))
    scores = torch.cat([parts["dr_fim"][n].reshape(-1) for n in sorted(parts["dr_fim"])])
    mask = torch.cat([parts["mask"][n].reshape(-1).bool() for n in sorted(parts["dr_fim"])])
    assert int(mask.sum()) == math.floor(RATIO * scores.numel() + 0.5)
    assert scores[mask].min() >= scores[~mask].max()


def test_dr_fim_of_one_batch_follows_from_the_curvatures_and_the_draw(written):
    """DR = T(A) + w·T(R), R = |A − A'| / (min(A, A') + ε), ε = 1e-3·mean(A), T(x) = x / mean(x) over the
    candidates, w = exp(−(ε_μ + ε_σ)) (docs/method.md §3)."""
    _, out, _ = written
    with safe_open(out / "scores.safetensors", framework="pt") as f:
        draws = json.loads(f.metadata()["draws"])
    parts = by_prefix(load_file(out / "scores.safetensors"))
    names = sorted(parts["dr_fim"])
    a, moved, dr = (torch.cat([parts[p][n].double().reshape(-1) for n in names])
                    for p in ("fisher", "fisher_perturbed", "dr_fim"))
    (draw,) = draws
    assert draw["weight"] == pytest.approx(math.exp(-(draw["eps_mu"] + draw["eps_sigma"])))
    ratio = (a - moved).abs() / (torch.minimum(a, moved) + 1e-3 * a.mean())
    expected = a / a.mean() + draw["weight"] * ratio / ratio.mean()
    assert not torch.equal(a, moved)  # the perturbation changed the curvature
    torch.testing.assert_close(dr, expected, rtol=1e-4, atol=1e-6)


def test_the_clean_fisher_is_the_per_image_fisher_after_the_warm_up(written, tmp_path):
    """F_i = (1/N) Σ_n (∂ℓ_n/∂θ_i)² by one backward pass per image, on a trainer that repeats the warm-up."""
    config, out, _ = written
    trainer = Trainer(config, tmp_path / "again", progress=False)
    trainer.folder.clean_up()
    trainer.warm_up_head()
    model = trainer.model.eval()
    params = dict(model.named_parameters())
    fisher = by_prefix(load_file(out / "scores.safetensors"))["fisher"]
    for n in fisher:  # the warm-up froze the backbone
        params[n].requires_grad_(True)
    sums = {n: torch.zeros_like(params[n], dtype=torch.float64) for n in fisher}
    images = 0
    for batch in trainer.estimation_batches:
        for image, label in zip(batch["image"], batch["label"]):
            loss = model.loss(image[None], label[None], reduction="none").sum()
            grads = torch.autograd.grad(loss, [params[n] for n in fisher], allow_unused=True)
            for n, g in zip(fisher, grads):
                if g is not None:
                    sums[n] += g.double() ** 2
            images += 1
    assert images == config.data.batch_size * config.train.prepare_batches
    for n, value in fisher.items():
        torch.testing.assert_close(value.double(), sums[n] / images, rtol=1e-4, atol=1e-12)


def test_the_analysis_describes_the_selection(written):
    config, out, _ = written
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["estimation_images"] == config.data.batch_size * config.train.prepare_batches
    assert 0 <= analysis["overlap"]["fim"] <= 1 and 0 <= analysis["overlap"]["random"] <= 1
    assert sum(analysis["module_share"].values()) == pytest.approx(1.0)
    assert len(analysis["draw_weights"]) == config.train.prepare_batches


def test_it_refuses_a_folder_that_holds_something(source, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FisherTuneError, match="already exists and is not empty"):
        fisher_map(tiny_run_config(source), tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_on_the_shipped_defaults_it_prints_which_term_decides(source, tmp_path, capsys):
    """The shipped estimate and schedule (no method options): reliability of both terms and of DR-FIM,
    each term's share of the selection, the budget by module and block, and the estimation cost."""
    config = tiny_run_config(source, warmup_steps=2, prepare_batches=2, steps=40)
    fisher_map(config, tmp_path / "map", progress=False)
    printed = capsys.readouterr().out
    analysis = json.loads((tmp_path / "map" / "analysis.json").read_text())
    assert set(analysis["reliability"]) == {"task", "domain", "dr_fim", "images_per_half"}
    assert set(analysis["influence"]) == {"task", "domain"}
    for term, values in analysis["influence"].items():
        assert 0 <= values["share"] <= 1
        assert f"The {term} term alone would select {100 * values['share']:.1f}% of the selection" in printed
    assert sum(analysis["block_share"].values()) == pytest.approx(1.0)
    assert "Share of the selection per block: " in printed
    cost = analysis["cost"]  # update_fraction 0.25 of 40 steps: updates after 10, 20, 30 -> 4 estimates
    shipped = FisherTuneTunerConfig()
    per_batch = 2 * shipped.var_samples + 1  # clean and perturbed streams, and the recording pass
    assert cost == {"estimates": 4, "passes_per_estimate": 2 * per_batch, "estimate_passes": 8 * per_batch,
                    "training_passes": 40, "ratio": 8 * per_batch / 40}
    assert f"{cost['estimate_passes']} passes against 40 training passes" in printed


def test_with_the_task_term_alone_its_scores_are_the_fisher(source, tmp_path):
    """score: fim ranks by the clean curvature itself (the same tensors under two names in the file)."""
    config = tiny_run_config(source, options={"score": "fim", "variational": "off", "growth_start": None},
                             warmup_steps=2)
    fisher_map(config, tmp_path / "map", progress=False)
    parts = by_prefix(load_file(tmp_path / "map" / "scores.safetensors"))
    assert parts["dr_fim"].keys() == parts["fisher"].keys()
    for name, score in parts["dr_fim"].items():
        assert torch.equal(score, parts["fisher"][name])
