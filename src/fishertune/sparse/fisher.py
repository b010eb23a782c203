"""The empirical diagonal Fisher information F_i = (1/N) Σ_n (∂ℓ_n/∂θ_i)², exact or from mini-batches.

`loss_fn(model, batch)` returns per-sample losses of shape [B]. A batch is any nest of dicts, lists and
tuples; its tensors are split along dim 0 into samples, other entries (e.g. names) are passed unchanged.

Backends of the exact (per-sample) mode:
- "layerwise": one batched forward and backward per batch; every sample's gradient of linear, LayerNorm
  and layer-scale parameters is read from the layer's input and output gradient (sparse/layerwise.py).
  About 1.5 training passes per batch on the demo, and no per-sample copy of the gradients is held. It
  assumes what vmap checks: that a batch's samples do not interact (no batch statistics, no control flow
  on the batch), true of the library's segmentors in eval mode, where `MaskSelector` uses it.
- "vmap": `torch.func.vmap(grad(...))` over the samples of a batch, with `functional_call`, so every
  sample's gradient comes from one batched pass. Needs a model that is a pure function of one sample.
- "loop": one forward and backward per sample (a batch of one). Works for every model, including
  BatchNorm in train mode, dropout, data-dependent control flow and forward hooks that draw random numbers.
- "auto": "vmap", falling back to "loop" (with a warning) when vmap fails on the first batch (draws an
  attached perturbation presampled for that batch are then spent, so its later draws shift).

vmap holds the per-sample gradients of the samples it maps over at once (samples × candidate parameters
floats). With chunk_size c the batch is cut into chunks of c samples, one vmap call each, and the squares
of each chunk are added to the sums before the next chunk runs, so at most c copies of the parameters'
gradients exist at any time (vmap's own chunk_size would not help: it concatenates every chunk's output).
For large models set chunk_size (e.g. 1-4 on a ViT-L). Sums then add chunk by chunk, which can change the
last bits of F against one whole-batch call.

Estimation runs in the model's current train/eval mode. `MaskSelector` switches the model to eval() while
estimating, so BatchNorm does not couple the samples of a batch and dropout does not randomise them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call, grad, vmap

from fishertune.errors import UsageError
from fishertune.sparse.batching import (
    batch_size,
    is_per_sample,
    map_tensors,
    per_sample_tensors,
    rebuild_one,
    sample,
)
from fishertune.sparse.dr_fim import flatten
from fishertune.sparse.finite import first_non_finite, require_finite
from fishertune.sparse.layerwise import LayerwiseUnsupported, add_layerwise_squares, layer_plan
from fishertune.sparse.perturbation import FeaturePerturbation

LossFn = Callable[[nn.Module, Any], torch.Tensor]
BACKENDS = ("auto", "layerwise", "vmap", "loop")
NO_SAMPLES = "no samples: the Fisher needs at least one non-empty batch"


def empirical_fisher(model: nn.Module, batches: Iterable[Any], loss_fn: LossFn,
                     params: Sequence[str] | None = None, per_sample: bool = True,
                     backend: str = "auto", chunk_size: int | None = None,
                     perturbation: FeaturePerturbation | None = None) -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher of the parameters `params`, in float32 with each parameter's shape.

    per_sample=True (exact): F_i = (1/N) Σ_n g_{n,i}², g_n = ∇ℓ_n, over all N samples of all batches.
    per_sample=False (cheap approximation): F_i = (1/N) Σ_b B_b · ḡ_{b,i}², ḡ_b = ∇((1/B_b) Σ_{n∈b} ℓ_n)
    the mean-loss gradient of batch b of size B_b. It equals the exact F when the per-sample gradients
    within each batch are identical, and underestimates it otherwise (cross terms of differing gradients
    cancel): it measures the squared signal, not the per-sample spread.

    params: parameter names; default every parameter with requires_grad. Names given explicitly are
    included even when frozen (their gradients are taken all the same). A parameter that receives no
    gradient gets zeros. Batches may have different sizes: squares are summed over samples and divided by
    the total count. Under an initialised torch.distributed process group, sums and counts are
    all-reduced, so N processes give the Fisher of the union of their data.
    chunk_size: samples per vmap call or layerwise pass, squared and summed before the next; None = whole
    batch. It bounds vmap's per-sample gradients to chunk_size copies of the parameters, and the layerwise
    backend's activations to those of chunk_size samples (it holds no per-sample copies).
    perturbation: an attached FeaturePerturbation whose random draws the vmap path makes ahead
    (`presample`) and maps over, so that it equals the loop path draw for draw; without it the draws of
    an attached perturbation make vmap fail over to the loop. When it weighs samples (the per-sample
    reading of DR-FIM's weight), each g_n² counts w_n times: (1/N) Σ_n w_n g_n².
    """
    sums, count = fisher_sums(model, batches, loss_fn, params, per_sample, backend, chunk_size, perturbation)
    return {name: s / count for name, s in sums.items()}


def fisher_sums(model: nn.Module, batches: Iterable[Any], loss_fn: LossFn,
                params: Sequence[str] | None = None, per_sample: bool = True,
                backend: str = "auto", chunk_size: int | None = None,
                perturbation: FeaturePerturbation | None = None, out: dict[str, torch.Tensor] | None = None,
                reduce: bool = True) -> tuple[dict[str, torch.Tensor], int]:
    """Σ_n g_n² (or Σ_b B_b ḡ_b²) and N, all-reduced across processes; `empirical_fisher` divides them.
    Sums with a NaN or an infinity (from NaN/Inf inputs or a diverged model) are refused (InputError
    naming the parameter and the first batch), so no selection is ever made from them.
    out: float32 tensors of the parameters' shapes to add the squares to (no buffer of the sums is made);
    reduce=False: this process's sums and count only (the caller all-reduces)."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown Fisher backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    named = _named_params(model, params)
    sums = out if out is not None else {name: torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                                        for name, p in named.items()}
    count, first_bad = 0, None
    mode = "batch" if not per_sample else _per_sample_mode(model, named, backend)
    if perturbation is not None and perturbation.weigh_samples and not per_sample:
        raise UsageError("weighing samples by their perturbation draws needs the per-sample Fisher")
    for index, batch in enumerate(batches):
        size = batch_size(batch)
        if mode == "batch":
            _accumulate_batch(model, batch, size, loss_fn, named, sums)
        if mode == "layerwise":
            try:
                _accumulate_layerwise(model, batch, size, loss_fn, named, sums, chunk_size, perturbation)
            except LayerwiseUnsupported as error:  # raised in the forward pass, before any square is added
                raise _refusal(error) from None
        if mode == "vmap":
            added: list[int] = []  # chunks whose squares reached the sums
            try:
                _accumulate_vmap(model, batch, size, loss_fn, named, sums, chunk_size, perturbation, added)
            except Exception as error:  # vmap cannot batch this model: fall back to one sample at a time
                if backend == "vmap" or count > 0 or added:
                    raise
                warnings.warn(f"per-sample Fisher: vmap failed ({type(error).__name__}: {str(error)[:200]}); "
                              "using the one-sample-at-a-time loop", stacklevel=2)
                mode = "loop"
        if mode == "loop":
            _accumulate_loop(model, batch, size, loss_fn, named, sums, perturbation)
        count += size
        if first_bad is None and first_non_finite(sums) is not None:
            first_bad = index
    if reduce:
        sums, count = _all_reduce(sums, count)  # every process checks the same sums, so all of them stop
    where = f" (first on this process after batch {first_bad})" if first_bad is not None else ""
    require_finite(sums, "Fisher sums", f"{where}: NaN or infinity in the inputs, the loss or the model")
    return sums, count


class RunningFisher:
    """The empirical Fisher of the batches seen so far, one batch at a time (for DR-FIM's per-batch terms).

    `value()` after the last batch equals `empirical_fisher` over all of them."""

    prior_floor = 0.0  # no prior: the plain DR-FIM ratio has only its ε
    ratio_scale = 1.0

    def __init__(self, model: nn.Module, loss_fn: LossFn, names: Sequence[str], per_sample: bool = True,
                 backend: str = "auto", chunk_size: int | None = None):
        self.model, self.loss_fn, self.names = model, loss_fn, list(names)
        self.options = dict(per_sample=per_sample, backend=backend, chunk_size=chunk_size)
        self.sums: dict[str, torch.Tensor] = {}
        self.seen = 0

    def update(self, batch: Any, perturbation: FeaturePerturbation | None = None) -> None:
        sums, count = fisher_sums(self.model, [batch], self.loss_fn, self.names, perturbation=perturbation,
                                  **self.options)
        for name, s in sums.items():
            self.sums[name] = self.sums[name] + s if name in self.sums else s
        self.seen += count

    def value(self) -> dict[str, torch.Tensor]:
        if self.seen == 0:
            raise UsageError("no samples: the Fisher needs at least one non-empty batch")
        return {name: s / self.seen for name, s in self.sums.items()}

    @property
    def flat(self) -> torch.Tensor:
        """`value()` as one flat float32 tensor, in the order of `names`."""
        return flatten(self.value(), self.names)


def _named_params(model: nn.Module, params: Sequence[str] | None) -> dict[str, nn.Parameter]:
    every = dict(model.named_parameters())
    if params is None:
        return {name: p for name, p in every.items() if p.requires_grad}
    missing = [name for name in params if name not in every]
    if missing:
        raise UsageError(f"unknown parameter {missing[0]!r} in params ({len(missing)} unknown)")
    return {name: every[name] for name in params}


@contextmanager
def _requiring_grad(named: dict[str, nn.Parameter]):
    """Temporarily let frozen parameters that were asked for take part in autograd."""
    frozen = [p for p in named.values() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _losses(model: nn.Module, batch: Any, size: int, loss_fn: LossFn) -> torch.Tensor:
    losses = loss_fn(model, batch)
    if losses.shape != (size,):
        raise UsageError(f"loss_fn must return per-sample losses of shape [{size}], "
                         f"got {list(losses.shape)}")
    return losses


def _add_squares(named: dict[str, nn.Parameter], grads: Sequence[torch.Tensor | None],
                 sums: dict[str, torch.Tensor], weight: float = 1.0) -> None:
    for name, g in zip(named, grads):
        if g is not None:
            sums[name].add_(g.detach().float().square(), alpha=weight)


def _accumulate_batch(model, batch, size, loss_fn, named, sums) -> None:
    with _requiring_grad(named):
        loss = _losses(model, batch, size, loss_fn).mean()
        grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
    _add_squares(named, grads, sums, weight=float(size))


def _per_sample_mode(model: nn.Module, named: dict[str, nn.Parameter], backend: str) -> str:
    if backend == "auto":
        return "vmap"
    if backend == "layerwise":
        try:
            layer_plan(model, list(named))
        except LayerwiseUnsupported as error:
            raise _refusal(error) from None
    return backend


def _refusal(error: LayerwiseUnsupported) -> UsageError:
    return UsageError(f"the layerwise per-sample Fisher cannot serve this model: {error}; use the vmap or "
                      "loop backend")


def _accumulate_layerwise(model, batch, size, loss_fn, named, sums, chunk_size, perturbation=None) -> None:
    """Batched passes of chunk_size samples (None: the whole batch); an attached perturbation draws as the
    loop would (presample) and perturbs each chunk as the loop perturbs each sample (the recorded Σ)."""
    draws, weights = _presampled(perturbation, size)
    plan = layer_plan(model, list(named))
    for part in _chunks(size, chunk_size):
        chunk = map_tensors(batch, lambda t, part=part: t[part] if is_per_sample(t, size) else t)
        n = part.stop - part.start
        losses_of = partial(_losses_under, model, loss_fn, n, perturbation,
                            map_tensors(draws, lambda t, part=part: t[part]) if draws is not None else None)
        chunk_weights = None if weights is None else weights[part]
        add_layerwise_squares(model, chunk, n, losses_of, plan, sums, chunk_weights)


def _presampled(perturbation: FeaturePerturbation | None, size: int):
    """(draws, weights): the perturbation's draws for `size` samples, made before any chunk as the
    one-sample loop makes them, and each sample's draw weight when the perturbation weighs samples."""
    draws = perturbation.presample(size) if perturbation is not None else None
    weights = perturbation.sample_weights(draws) if draws is not None and perturbation.weigh_samples else None
    return draws, weights


def _chunks(size: int, chunk_size: int | None) -> list[slice]:
    """The batch's samples in chunks of chunk_size (None: the whole batch)."""
    step = chunk_size or size
    return [slice(start, min(start + step, size)) for start in range(0, size, step)]


def _losses_under(model, loss_fn, size, perturbation, draws, batch) -> torch.Tensor:
    """The batch's per-sample losses, perturbed by the presampled `draws` as the one-sample loop would."""
    with perturbation.using(draws, one_at_a_time=True) if draws is not None else nullcontext():
        return _losses(model, batch, size, loss_fn)


def _accumulate_loop(model, batch, size, loss_fn, named, sums, perturbation=None) -> None:
    weighing = perturbation is not None and perturbation.weigh_samples
    draws = perturbation.presample(size) if weighing else {}
    weights = perturbation.sample_weights(draws).tolist() if weighing else [1.0] * size
    with _requiring_grad(named):
        for n in range(size):
            one = map_tensors(draws, lambda t, n=n: t[n:n + 1])
            with perturbation.using(one) if weighing else nullcontext():
                loss = _losses(model, sample(batch, n, size), 1, loss_fn)[0]
            grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
            _add_squares(named, grads, sums, weight=weights[n])


class _LossModule(nn.Module):
    """`loss_fn(model, batch)` as a module, so `functional_call` can swap the parameters of `model`."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def _accumulate_vmap(model, batch, size, loss_fn, named, sums, chunk_size, perturbation, added) -> None:
    """Adds the squares chunk by chunk; `added` gets one entry per chunk added (a failure after the first
    chunk cannot fall back to the loop: the sums already hold part of the batch)."""
    wrapper = _LossModule(model, loss_fn)
    values = {name: p.detach() for name, p in named.items()}
    leaves = per_sample_tensors(batch, size)
    draws, weights = _presampled(perturbation, size)
    draws = draws or {}  # vmap maps over a pytree: no perturbation, no leaves

    def one_loss(theta: dict[str, torch.Tensor], sample_leaves: list[torch.Tensor],
                 sample_draws: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        swapped = {f"model.{name}": v for name, v in theta.items()}
        with perturbation.using(sample_draws) if perturbation is not None else nullcontext():
            one = rebuild_one(batch, size, sample_leaves)
            losses = functional_call(wrapper, swapped, (one,), strict=False)
        return losses.reshape(())

    per_sample_grad = vmap(grad(one_loss), in_dims=(None, 0, 0))
    for part in _chunks(size, chunk_size):
        def cut(t: torch.Tensor, part: slice = part) -> torch.Tensor:
            return t[part]

        with warnings.catch_warnings():  # torch's note that some op (e.g. CPU SDPA) is batched by a slow loop
            warnings.filterwarnings("ignore", message="There is a performance drop")
            per_sample_grads = per_sample_grad(values, [cut(t) for t in leaves], map_tensors(draws, cut))
        for name, g in per_sample_grads.items():
            squares = g.detach().float().square()
            if weights is not None:
                squares.mul_(weights[part].view((-1,) + (1,) * (squares.dim() - 1)))
            sums[name].add_(squares.sum(0))
        del per_sample_grads
        added.append(part.start)


def _all_reduce(sums: dict[str, torch.Tensor], count: int) -> tuple[dict[str, torch.Tensor], int]:
    if not (dist.is_available() and dist.is_initialized()) or not sums:
        return sums, _all_reduce_flat(None, count)
    flat = torch.cat([s.reshape(-1) for s in sums.values()])
    total = _all_reduce_flat(flat, count)
    out, offset = {}, 0
    for name, s in sums.items():
        out[name] = flat[offset:offset + s.numel()].view_as(s)
        offset += s.numel()
    return out, total


def _world_count(count: int, device: torch.device | None = None) -> tuple[int, int]:
    """The sample count summed over the processes (when there are several; it must be > 0) and their
    number."""
    world = 1
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        total = torch.tensor([float(count)], device=device)
        dist.all_reduce(total)
        count = int(round(total.item()))
    if count == 0:
        raise UsageError(NO_SAMPLES)
    return count, world


def _sum_over_processes(flat: torch.Tensor) -> None:
    """`flat` summed in place over the processes (nothing with one)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flat)


def _all_reduce_flat(flat: torch.Tensor | None, count: int) -> int:
    """Sum `flat` in place and the sample count over the processes (when there are several and `flat` is
    given); returns the total count, which must be > 0."""
    if flat is None:
        if count == 0:
            raise UsageError(NO_SAMPLES)
        return count
    _sum_over_processes(flat)
    return _world_count(count, flat.device)[0]
