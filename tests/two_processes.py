"""Run a test's worker in 2 gloo processes on this machine (tests of torch.distributed code)."""

import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, port: int, worker, args: tuple) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        worker(rank, *args)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_two_processes(worker, *args, timeout: float = 120) -> None:
    """`worker(rank, *args)` in 2 spawned processes of one gloo group (a module-level function, so that it
    can be sent to them); a worker's exception fails the caller, and so does running past `timeout` s."""
    context = mp.spawn(_entry, args=(_free_port(), worker, args), nprocs=2, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"{worker.__name__} timed out after {timeout} s")
