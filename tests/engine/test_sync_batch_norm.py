"""BatchNorm under 2-process gloo DDP on CPU: with `distributed.sync_batch_norm` the training equals one
process on the whole batch up to float rounding; plain BatchNorm (each process its own half's statistics)
does not."""

import pytest
import torch
from torch import nn

from fishertune.engine import distributed
from two_processes import run_in_two_processes

BATCH = 6  # 3 images per process
STEPS = 3


def make_model(momentum) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=momentum), nn.Conv2d(4, 2, 1))
    with torch.no_grad():  # a non-trivial affine transform
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def data():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(STEPS, BATCH, 3, 5, 5, generator=generator) * 2 + 1
    targets = torch.randn(STEPS, BATCH, 2, 5, 5, generator=generator)
    return images, targets


def train(model: nn.Module, forward: nn.Module, part: slice) -> dict:
    """STEPS SGD steps on `part` of each batch; the weights, buffers, outputs and the eval-mode output."""
    images, targets = data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    outputs = []
    for step in range(STEPS):
        optimizer.zero_grad()
        out = forward(images[step, part])
        ((out - targets[step, part]) ** 2).mean().backward()  # each sample's loss depends on the others
        optimizer.step()
        outputs.append(out.detach())
    model.eval()
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "train_out": torch.stack(outputs),
            "eval_out": model(images[0, part]).detach()}


def worker(rank, out):
    part = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
    results = {}
    for momentum in (0.1, None):
        for sync in (True, False):
            model = make_model(momentum)
            if sync:
                distributed.sync_batch_norm(model, torch.device("cpu"))
                assert type(model[1]) is distributed.CpuSyncBatchNorm
            ddp = nn.parallel.DistributedDataParallel(model)
            results[f"{momentum}-{sync}"] = train(model, ddp, part)
    torch.save(results, f"{out}/rank{rank}.pt")


@pytest.mark.slow  # spawning two interpreters imports torch twice
def test_two_process_sync_batch_norm_equals_single_process(tmp_path):
    run_in_two_processes(worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for momentum in (0.1, None):
        model = make_model(momentum)
        single = train(model, model, slice(None))
        synced = [r[f"{momentum}-True"] for r in ranks]
        plain = [r[f"{momentum}-False"] for r in ranks]
        # the same keys as plain BatchNorm: saved weights load into the one-process model
        assert synced[0]["state"].keys() == single["state"].keys()
        for name, value in single["state"].items():  # weights, running statistics, num_batches_tracked
            for rank in (0, 1):
                torch.testing.assert_close(synced[rank]["state"][name], value, rtol=1e-5, atol=1e-6)
        for key, batch_dim in (("train_out", 1), ("eval_out", 0)):
            both = torch.cat([synced[0][key], synced[1][key]], dim=batch_dim)
            torch.testing.assert_close(both, single[key], rtol=1e-5, atol=1e-5)
        # without synchronisation each process normalises with its own half's statistics: far from rounding
        difference = (plain[0]["state"]["0.weight"] - single["state"]["0.weight"]).abs().max()
        assert difference > 1e-3, float(difference)
        running = (plain[0]["state"]["1.running_mean"] - single["state"]["1.running_mean"]).abs().max()
        assert running > 1e-3, float(running)


def test_sync_batch_norm_changes_nothing_in_one_process():
    model = make_model(0.1)
    distributed.sync_batch_norm(model, torch.device("cpu"))
    assert type(model[1]) is nn.BatchNorm2d
