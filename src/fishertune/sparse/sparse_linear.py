"""Row-sparse weight gradients for nn.Linear: compute ∂L/∂W only for the rows that train.

For y = x Wᵀ + b with W of shape [out, in], the weight gradient is G = δᵀ x (δ = ∂L/∂y flattened to
[N, out], x to [N, in]). When only the rows R of W are trained (selection at `granularity: row`), only
G[R] = δ[:, R]ᵀ x is needed: a GEMM of |R|·in·N instead of out·in·N multiply-adds. The other rows of the
returned gradient are zero (the optimiser never reads them). The input gradient δ W and the bias
gradient Σ_n δ_n are computed in full, as dense autograd does.

`RowSparseLinears(model).update(masks)` switches every nn.Linear whose weight has a mask to this path
with R = the rows holding a selected entry (a Linear whose rows are all selected, or none, keeps the
dense path: with none selected its weight is frozen and gets no gradient at all). It acts only in training
mode with autograd on, so evaluation and the Fisher's vmap (run in eval mode) see plain nn.Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RowSparseLinearFunction(torch.autograd.Function):
    """F.linear(x, weight, bias) whose backward computes the weight gradient of `rows` only."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                rows: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, rows = inputs
        ctx.save_for_backward(x, weight, rows)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, weight, rows = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_output.matmul(weight)
        flat_grad = grad_output.reshape(-1, weight.shape[0])
        if ctx.needs_input_grad[1]:
            grad_weight = weight.new_zeros(weight.shape)
            selected = flat_grad.index_select(1, rows).t().mm(x.reshape(-1, weight.shape[1]))
            grad_weight.index_copy_(0, rows, selected.to(weight.dtype))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = flat_grad.sum(0)
        return grad_x, grad_weight, grad_bias, None


class RowSparseLinear(nn.Linear):
    """An nn.Linear (same parameters and names) whose weight gradient covers `sparse_rows` only, in training
    mode under autograd; a plain nn.Linear otherwise. `RowSparseLinears` switches layers to and from it."""

    sparse_rows: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled() and self.weight.requires_grad):
            return F.linear(x, self.weight, self.bias)
        return RowSparseLinearFunction.apply(x, self.weight, self.bias, self.sparse_rows)


class RowSparseLinears:
    """Keeps a model's masked nn.Linear layers on the row-sparse backward, following the masks."""

    def __init__(self, model: nn.Module):
        self.model = model

    def update(self, masks: dict[str, torch.Tensor]) -> list[str]:
        """Rows = rows with a selected entry; a layer with all rows or none is a plain nn.Linear. Returns
        the names of the row-sparse layers."""
        sparse = []
        for name, module in self.model.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            mask = masks.get(f"{name}.weight" if name else "weight")
            rows = None if mask is None else mask.reshape(mask.shape[0], -1).any(1).nonzero().squeeze(1)
            if rows is not None and 0 < rows.numel() < mask.shape[0]:
                module.__class__ = RowSparseLinear  # same parameters, a forward with the sparse backward
                module.sparse_rows = rows.to(module.weight.device)
                sparse.append(name)
            elif type(module) is RowSparseLinear:
                module.__class__ = nn.Linear
                del module.sparse_rows
        return sparse
