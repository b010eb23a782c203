"""2-process gloo: the all-reduced Fisher equals one process's Fisher on the union of the data."""

import pytest
import torch
from tiny_models import MLP, classification_loss, make_batches

from fishertune import empirical_fisher
from fishertune.sparse.variational import VariationalSettings, variational_fisher
from two_processes import run_in_two_processes

SIZES = [3, 1, 2, 4]
SHARDS = {0: [0, 1], 1: [2, 3]}  # uneven: 4 and 6 samples


def fishers(batches):
    torch.manual_seed(0)
    model = MLP()
    return {mode: empirical_fisher(model, batches, classification_loss, per_sample=mode == "exact")
            for mode in ("exact", "cheap")}


def worker(rank, out):
    batches = make_batches(SIZES, (6,))
    result = fishers([batches[i] for i in SHARDS[rank]])
    torch.save(result, f"{out}/rank{rank}.pt")


@pytest.mark.slow  # spawning two interpreters imports torch twice
def test_two_process_fisher_equals_single_process(tmp_path):
    run_in_two_processes(worker, str(tmp_path))
    single = fishers(make_batches(SIZES, (6,)))
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for mode in ("exact", "cheap"):
            for name, value in single[mode].items():
                torch.testing.assert_close(result[mode][name], value, rtol=1e-5, atol=1e-10)


def ivon(batch):
    torch.manual_seed(0)
    settings = VariationalSettings(curvature="ivon", gamma=1e-2, tau=3e-2, samples=2, seed=4)
    return variational_fisher(MLP(), [batch], classification_loss, settings=settings)


def ivon_worker(rank, out):
    batch = make_batches([3, 5], (6,))[rank]  # uneven shards of one batch
    torch.save(ivon(batch), f"{out}/ivon{rank}.pt")


@pytest.mark.slow
def test_two_process_ivon_estimate_equals_single_process(tmp_path):
    """Each process measures ĥ on its shard at the same weight samples; the all-reduced, size-weighted
    sums are the estimate of the whole batch (the mean loss's gradient is the shards' weighted mean)."""
    run_in_two_processes(ivon_worker, str(tmp_path))
    shards = make_batches([3, 5], (6,))
    whole = {k: torch.cat([s[k] for s in shards]) for k in ("x", "y")}
    single = ivon(whole)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"ivon{rank}.pt", weights_only=True)
        for name, value in single.items():
            torch.testing.assert_close(result[name], value, rtol=1e-4, atol=1e-6)
