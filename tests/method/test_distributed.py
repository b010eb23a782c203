"""2-process gloo: the all-reduced Fisher equals one process's Fisher on the union of the data."""

import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_models import MLP, classification_loss, make_batches

from fishertune import empirical_fisher

SIZES = [3, 1, 2, 4]
SHARDS = {0: [0, 1], 1: [2, 3]}  # uneven: 4 and 6 samples


def fishers(batches):
    torch.manual_seed(0)
    model = MLP()
    return {mode: empirical_fisher(model, batches, classification_loss, per_sample=mode == "exact")
            for mode in ("exact", "cheap")}


def worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        batches = make_batches(SIZES, (6,))
        result = fishers([batches[i] for i in SHARDS[rank]])
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # spawning two interpreters imports torch twice
def test_two_process_fisher_equals_single_process(tmp_path):
    context = mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 60
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError("distributed Fisher workers timed out")
    single = fishers(make_batches(SIZES, (6,)))
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for mode in ("exact", "cheap"):
            for name, value in single[mode].items():
                torch.testing.assert_close(result[mode][name], value, rtol=1e-5, atol=1e-10)
