"""Σ_n w_n g_n² of a batch from one batched forward and backward, layer by layer.

A layer applied to the tokens x_{n,t} of sample n, with δ_{n,t} = ∂ℓ_n/∂y_{n,t} its output's gradient,
has per-sample parameter gradients that are sums over the sample's own tokens:

    linear     y = W x + b     g_W = Σ_t δ_t x_tᵀ     g_b = Σ_t δ_t
    LayerNorm  y = γ ⊙ x̂ + β   g_γ = Σ_t δ_t ⊙ x̂_t    g_β = Σ_t δ_t
    layer scale  y = λ ⊙ x     g_λ = Σ_t δ_t ⊙ x_t

So one backward of Σ_n ℓ_n, with each layer's input kept by a forward hook and its δ caught by a hook on
its output, gives every sample's gradient of these parameters exactly (Goodfellow, 2015; BackPACK's
SumGradSquared): each is squared and added to the sums as soon as its δ arrives, and no per-sample copy
of the model's gradient is ever held. The backward runs to the batch's float inputs only, so the
weights' own (summed) gradients are not computed.

This holds when samples do not interact (eval mode: no BatchNorm statistics across the batch) and each
layer runs once per forward pass. Parameters of any other kind (convolutions, tokens, position
embeddings, attention biases), a layer whose batch dimension is not the batch's (windowed attention) or
that runs twice make `LayerwiseUnsupported`: the caller then uses the vmap or loop backend.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fishertune.sparse.batching import map_tensors


class LayerwiseUnsupported(Exception):
    """The model's structure does not let per-sample gradients be read from one batched pass."""


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.LayerNorm):
        return "norm"
    own = list(module.parameters(recurse=False))
    if type(module).__name__.endswith("LayerScale") and len(own) == 1 and own[0].dim() == 1:
        return "scale"
    return None


def layer_plan(model: nn.Module, names: list[str]) -> dict[nn.Module, dict[str, str]]:
    """{layer: {its parameter's attribute ("weight", "bias", ...): the parameter's name}} for `names`;
    raises LayerwiseUnsupported naming the first parameter no supported layer owns."""
    modules = dict(model.named_modules())
    plan: dict[nn.Module, dict[str, str]] = {}
    for name in names:
        owner, _, attribute = name.rpartition(".")
        module = modules.get(owner)
        if module is None or _kind(module) is None:
            raise LayerwiseUnsupported(f"{name!r} is not a parameter of a linear, LayerNorm or layer-scale "
                                       "layer")
        plan.setdefault(module, {})[attribute] = name
    return plan


def add_layerwise_squares(model: nn.Module, batch: Any, size: int, losses_of, plan, sums,
                          weights: torch.Tensor | None = None) -> None:
    """Add Σ_n w_n g_n² of the planned parameters (w_n = 1 without `weights`) to `sums`, from one forward
    and one backward of the batch. `losses_of(batch)` returns the per-sample losses [size]."""
    inputs: dict[nn.Module, torch.Tensor] = {}

    def forward_hook(module, args, output):
        if module in inputs:
            raise LayerwiseUnsupported("a layer runs twice in one forward pass")
        x = args[0]
        if x.shape[0] != size or output.shape[0] != size or not output.requires_grad:
            raise LayerwiseUnsupported("a layer's first dimension is not the batch, or its output does not "
                                       "depend on the inputs")
        own = next(module.parameters(recurse=False))
        if _kind(module) != "linear" and tuple(x.shape[x.dim() - own.dim():]) != tuple(own.shape):
            raise LayerwiseUnsupported("a layer's parameter does not match its input's last dimensions")
        inputs[module] = x.detach()
        output.register_hook(lambda delta, module=module: _add(module, delta))

    def _add(module, delta):
        x = inputs.pop(module)
        for attribute, g in _per_sample_gradients(module, x, delta, plan[module]):
            name = plan[module][attribute]
            squares = g.square()
            if weights is not None:
                squares.mul_(weights.to(g.device).view((-1,) + (1,) * (g.dim() - 1)))
            sums[name].add_(squares.sum(0))

    leaves: list[torch.Tensor] = []

    def as_leaf(t: torch.Tensor) -> torch.Tensor:
        if not t.is_floating_point():
            return t
        leaves.append(t.detach().requires_grad_(True))
        return leaves[-1]

    handles = [module.register_forward_hook(forward_hook) for module in plan]
    try:
        with _frozen(model), torch.enable_grad():
            losses = losses_of(map_tensors(batch, as_leaf))
            if not leaves or not losses.requires_grad:
                raise LayerwiseUnsupported("the loss does not depend on a float input of the batch")
            torch.autograd.grad(losses.sum(), leaves, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()


def _per_sample_gradients(module: nn.Module, x: torch.Tensor, delta: torch.Tensor, wanted: dict[str, str]):
    """(attribute, [B, *parameter shape] float32 per-sample gradient) of the layer's wanted parameters."""
    b = x.shape[0]
    x, delta = x.float(), delta.float()
    if isinstance(module, nn.Linear):
        x, delta = x.reshape(b, -1, x.shape[-1]), delta.reshape(b, -1, delta.shape[-1])
        if "weight" in wanted:
            yield "weight", torch.bmm(delta.transpose(1, 2), x)
        if "bias" in wanted:
            yield "bias", delta.sum(1)
        return
    shape = next(p for p in module.parameters(recurse=False)).shape
    delta = delta.reshape(b, -1, *shape)
    if isinstance(module, nn.LayerNorm):
        normalised = F.layer_norm(x, module.normalized_shape, eps=module.eps).reshape(b, -1, *shape)
        if "weight" in wanted:
            yield "weight", (delta * normalised).sum(1)
        if "bias" in wanted:
            yield "bias", delta.sum(1)
        return
    (attribute,) = wanted
    yield attribute, (delta * x.reshape(b, -1, *shape)).sum(1)


@contextmanager
def _frozen(model: nn.Module):
    """No parameter takes part in autograd, so the backward computes the layers' δ and not the weights'
    summed gradients."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
