"""torch.distributed helpers: one code path for single-process, torchrun multi-GPU and gloo-on-CPU runs.

`torchrun --nproc_per_node N -m fishertune.cli.main train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; `setup()`
then joins the process group (nccl on CUDA, gloo on CPU). Only rank 0 writes files.

BatchNorm under DDP (`sync_batch_norm`, on CPU too): every process normalises with the statistics of the
whole global batch, as one process on that batch does, so a distributed run equals one process up to float
rounding.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


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


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes, differentiable: the gradient of the sum is the sum of the processes'
    gradients (each process's loss depends on every process's input). torch's own,
    `torch.distributed.nn.functional.all_reduce`, is deprecated."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(_BatchNorm):
    """What `nn.SyncBatchNorm` computes, for CPU tensors over gloo: torch's needs a GPU (its kernels
    `batch_norm_stats` and `batch_norm_gather_stats_with_counts` exist only for CUDA, and DDP refuses it on
    CPU). In training, with n = the number of values per channel in the global batch,

        mean = Σ_processes Σ x / n,   var = Σ_processes Σ (x - mean)² / n,
        y = (x - mean) / √(var + eps) · w + b

    (two passes, as exact as one process's BatchNorm), differentiable through the sums, and the running
    statistics move towards mean and the unbiased var · n / (n - 1), as `nn.BatchNorm2d`'s do. In eval
    mode it is plain BatchNorm. Same parameters and buffers as the BatchNorm it replaces: same state_dict."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        count = x.new_tensor([x.numel() / x.size(1)])
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = sums[-1].detach()
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1))
        return y.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def sync_batch_norm(model: nn.Module, device: torch.device) -> None:
    """In a distributed run, make every BatchNorm layer inside `model` normalise with the statistics of the
    global batch: torch's `nn.SyncBatchNorm` on CUDA, `CpuSyncBatchNorm` on CPU; nothing otherwise. Both keep
    the layer's parameters and buffers, so saved weights have the same keys and load into the plain model,
    and evaluation (`model.eval()`) uses the running statistics as before."""
    if not is_distributed():
        return
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.__class__ = CpuSyncBatchNorm  # the same state; only forward differs
