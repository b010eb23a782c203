"""The trainer's pure parts: data order shared out over processes, learning-rate schedules."""

import math

import pytest

from fishertune.engine.trainer import epoch_indices, lr_factor


@pytest.mark.parametrize("world", [2, 4])
def test_each_global_batch_is_split_over_the_processes(world):
    n, batch = 22, 4
    single = epoch_indices(n, batch, seed=5, epoch=1, rank=0, world=1)
    shards = [epoch_indices(n, batch, seed=5, epoch=1, rank=r, world=world) for r in range(world)]
    local = batch // world
    assert len(single) == (n // batch) * batch and len(set(single)) == len(single)
    for k in range(n // batch):
        parts = [i for shard in shards for i in shard[k * local:(k + 1) * local]]
        assert sorted(parts) == sorted(single[k * batch:(k + 1) * batch])
    assert epoch_indices(n, batch, 5, 2, 0, 1) != single  # a new order every epoch
    assert epoch_indices(n, batch, 5, 1, 0, 1) == single  # ... fixed by (seed, epoch)


def test_learning_rate_schedules():
    poly, cosine = lr_factor("poly", 10, 2), lr_factor("cosine", 10, 2)
    assert [poly(0), poly(1)] == [0.5, 1.0]  # linear warm-up
    assert poly(2) == 1.0 and poly(6) == pytest.approx(0.5 ** 0.9)
    assert cosine(6) == pytest.approx(0.5) and cosine(2) == 1.0
    assert 0 < cosine(9) < 0.05 and 0 < poly(9) < 0.2
    assert lr_factor("constant", 10, 0)(7) == 1.0
    assert math.isclose(lr_factor("poly", 10, 0)(0), 1.0)


@pytest.mark.parametrize("family", ["dinov2", "clip", "mae", "sam"])
def test_perturbation_layers_name_modules_the_forward_runs(family):
    """Block indices resolve to modules that the forward runs and whose outputs are tokens [B, T, D], the
    layout the perturbation expects (SAM's own layers work on [B, h, w, D] grids)."""
    import torch

    from fishertune.engine.trainer import perturbation_modules
    from fishertune.errors import FisherTuneError
    from fishertune.models import build_segmentor, tiny_backbone_config

    model = build_segmentor({"name": family, "config": tiny_backbone_config(family)}, "linear")
    names = perturbation_modules(model, [0, -1])
    modules = dict(model.named_modules())
    seen = []
    hooks = [lambda m, a, o, n=n: seen.append((n, o.dim())) for n in names]
    handles = [modules[n].register_forward_hook(hook) for n, hook in zip(names, hooks)]
    model(torch.rand(1, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert seen == [(n, 3) for n in names]
    with pytest.raises(FisherTuneError, match="block 9 does not exist"):
        perturbation_modules(model, [9])
    with pytest.raises(FisherTuneError, match="no module named"):
        perturbation_modules(model, ["backbone.model.nope"])
