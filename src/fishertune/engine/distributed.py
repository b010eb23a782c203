"""torch.distributed helpers: one code path for single-process, torchrun multi-GPU and gloo-on-CPU runs.

`torchrun --nproc_per_node N -m fishertune.cli.main train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; `setup()`
then joins the process group (nccl on CUDA, gloo on CPU). Only rank 0 writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup() -> torch.device:
    """Join the process group if launched by torchrun; return this process's device."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over all processes (a new tensor; the input itself when not distributed)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    if dist.get_backend() == "nccl":
        out = out.cuda()
    dist.all_reduce(out)
    return out.to(tensor.device)


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every process when `flag` is true on any process (e.g. a non-finite loss)."""
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)

