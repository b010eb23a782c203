"""DSU-style domain perturbation: resample each channel's feature mean and std around their statistics.

For a feature x of one sample (channels C; statistics over the tokens of a [B, T, C] sequence or over the
space of a [B, C, H, W] map), with μ, σ its per-channel mean and std (σ = sqrt(var + 1e-6)):

    μ̃ = μ + α·ε_μ·Σ_μ,   σ̃ = σ + α·ε_σ·Σ_σ,   ε ~ N(0, 1) per sample and channel,
    out = (x − μ) / σ · σ̃ + μ̃.

The labels are unchanged. Σ, the uncertainty of the statistics, is as in DSU (Li et al., ICLR 2022) the
std across the batch of μ and of σ (sqrt(var + 1e-6)), for batches of two or more samples. A batch of one
sample has no spread, so it uses, in this order:
1. the Σ recorded by `recording()` (the mean over the forward passes made inside it), which is how
   per-sample Fisher estimation sees the DSU uncertainty of the batches it came from;
2. else the sample's own spread, Σ_μ = Σ_σ = σ (documented fallback: μ moves and σ scales by α·ε of
   the channel's own std).
Whatever the source, the transform of a sample depends only on that sample, its draws and Σ, so the
per-sample Fisher under perturbation equals a one-sample-at-a-time loop with the same draws.

Draws come from a torch.Generator seeded with `seed`, in forward order (module by module, sample by
sample within a batch). `take_draws()` summarises the draws made since its last call as DR-FIM's scalars:
ε_μ = α·mean ε_μ and ε_σ = α·mean ε_σ, *signed* means over every channel, module and sample drawn (the
perturbation in units of Σ; 0 at α = 0), and the same means of |ε| for the earlier `abs_mean` weighting.
With α = 0 or `enabled = False` the hooks return their input unchanged.

`weigh_samples=True` is the per-sample reading of DR-FIM's weight (docs/method.md §3): each sample draws
one scalar ε_μ and one ε_σ per perturbed module, shared by all its channels, and carries the weight
w_n = exp(−α·mean over modules of (ε_μ,n + ε_σ,n)) (`sample_weights`), by which the per-sample Fisher
under the perturbation weighs it. Its draws are always made ahead (`presample`).

Modules are matched by name, exact or as an fnmatch glob (`*` also matches dots: "blocks.?" is blocks
0-9 but "blocks.*" is every submodule of every block). A module's output may be a tensor or a tuple whose
first element is the tensor to perturb (transformer blocks); 3-D outputs are [B, T, C], 4-D are NCHW.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fishertune.errors import FisherTuneError

STAT_EPS = 1e-6


@dataclass(frozen=True)
class Draws:
    """DSU draws of one stretch of forward passes reduced to DR-FIM's scalars (docs/method.md):
    eps_mu = α·mean ε_μ, eps_sigma = α·mean ε_σ (signed), abs_mu / abs_sigma the means of α·|ε|,
    `count` the numbers drawn per kind."""

    eps_mu: float = 0.0
    eps_sigma: float = 0.0
    abs_mu: float = 0.0
    abs_sigma: float = 0.0
    count: int = 0


class FeaturePerturbation:
    """Context manager attaching DSU-style feature perturbation to the named modules of `model`."""

    def __init__(self, model: nn.Module, module_names: str | Sequence[str], alpha: float = 1.0,
                 seed: int = 0, weigh_samples: bool = False):
        if alpha < 0:
            raise FisherTuneError(f"perturbation alpha must be >= 0, got {alpha}")
        patterns = [module_names] if isinstance(module_names, str) else list(module_names)
        modules = dict(model.named_modules())
        self.module_names: list[str] = []
        for pattern in patterns:
            hits = [name for name in modules if name and fnmatch.fnmatchcase(name, pattern)]
            if not hits:
                raise FisherTuneError(f"perturbation layer {pattern!r} matches no module of the model")
            self.module_names += [name for name in hits if name not in self.module_names]
        self._modules = [modules[name] for name in self.module_names]
        self.alpha = float(alpha)
        self.seed = seed
        self.weigh_samples = weigh_samples
        self.sample_weight_log: list[float] = []  # every w_n given by sample_weights(), in order
        self.enabled = True
        self.recorded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._recording: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._generators: dict[torch.device, torch.Generator] = {}
        self._handles: list = []
        self._sums: torch.Tensor | None = None  # Σε_μ, Σε_σ, Σ|ε_μ|, Σ|ε_σ| since take_draws()
        self._entries = 0  # drawn numbers per ε kind since take_draws()
        self._draw_shapes: dict[str, tuple[tuple[int, ...], torch.device, torch.dtype]] = {}
        self._given: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._one_at_a_time = False

    # -- attaching ------------------------------------------------------------------------------------
    def __enter__(self) -> FeaturePerturbation:
        if self._handles:
            raise FisherTuneError("this FeaturePerturbation is already attached")
        for name, module in zip(self.module_names, self._modules):
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- uncertainty recording ------------------------------------------------------------------------
    def recording(self) -> _Recording:
        """Inside: forward passes are not perturbed; their batch Σ are averaged into `recorded`."""
        return _Recording(self)

    # -- draws made ahead, for vmap ------------------------------------------------------------------
    def presample(self, batch_size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The draws a one-sample-at-a-time loop over `batch_size` samples would make, in its order
        (sample by sample, module by module), as {name: (ε_μ, ε_σ)} of shape [B, *per-sample shape].

        Needs one forward pass with the hooks attached first (e.g. under `recording()`), which tells the
        modules' order and channel counts. Used by the vmap path of the per-sample Fisher."""
        if not self._draw_shapes:
            raise FisherTuneError("presample() needs a forward pass with the perturbation attached first")
        draws: dict[str, list[torch.Tensor]] = {name: [] for name in self._draw_shapes}
        for _ in range(batch_size):
            for name, (shape, device, dtype) in self._draw_shapes.items():
                generator = self._generator(device)
                pair = [torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(2)]
                self._account(*pair)
                draws[name].append(pair)
        return {name: (torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))
                for name, pairs in draws.items()}

    def sample_weights(self, draws: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """w_n = exp(−α·mean_m (ε_μ,n,m + ε_σ,n,m)) of presampled `draws` (ε of a module averaged over its
        entries: one scalar each with weigh_samples), float32 of shape [B]; logged in
        `sample_weight_log`."""
        per_module = [(mu.flatten(1).float().mean(1) + sigma.flatten(1).float().mean(1))
                      for mu, sigma in draws.values()]
        weights = torch.stack(per_module).mean(0).mul_(-self.alpha).exp_()
        self.sample_weight_log += weights.tolist()
        return weights

    def using(self, draws: dict[str, tuple[torch.Tensor, torch.Tensor]],
              one_at_a_time: bool = False) -> _Using:
        """Inside: the hooks take their ε from `draws` (one per sample) instead of the generator.
        one_at_a_time: a batch is perturbed as a one-sample-at-a-time loop would perturb its samples, with
        the recorded Σ (not the batch's own spread)."""
        return _Using(self, draws, one_at_a_time)

    # -- reporting ------------------------------------------------------------------------------------
    def take_draws(self) -> Draws:
        """The draws made since the last call (all zero before any), then forget them."""
        if self._sums is None:
            return Draws()
        scale = self.alpha / self._entries
        mu, sigma, abs_mu, abs_sigma = (scale * v for v in self._sums.tolist())
        draws = Draws(mu, sigma, abs_mu, abs_sigma, self._entries)
        self._sums, self._entries = None, 0
        return draws

    def _account(self, eps_mu: torch.Tensor, eps_sigma: torch.Tensor) -> None:
        mu, sigma = eps_mu.detach().double(), eps_sigma.detach().double()
        sums = torch.stack([mu.sum(), sigma.sum(), mu.abs().sum(), sigma.abs().sum()])  # no device sync
        self._sums = sums if self._sums is None else self._sums + sums.to(self._sums.device)
        self._entries += eps_mu.numel()

    # -- the transform --------------------------------------------------------------------------------
    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output):
            if isinstance(output, tuple):
                return (self._perturb(name, output[0]),) + output[1:]
            return self._perturb(name, output)
        return hook

    def _perturb(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            dims, channel_shape = (1,), (x.shape[0], 1, x.shape[2])
        elif x.dim() == 4:
            dims, channel_shape = (2, 3), (x.shape[0], x.shape[1], 1, 1)
        else:
            raise FisherTuneError(f"perturbation at {name!r}: expected a [B,T,C] or [B,C,H,W] output, "
                                  f"got shape {list(x.shape)}")
        mu = x.mean(dim=dims, keepdim=True)
        sigma = (x.var(dim=dims, keepdim=True) + STAT_EPS).sqrt()
        draw_shape = (1,) * (len(channel_shape) - 1) if self.weigh_samples else channel_shape[1:]
        self._draw_shapes.setdefault(name, (draw_shape, x.device, x.dtype))
        if self._recording is not None:
            if x.shape[0] > 1:
                self._recording.setdefault(name, []).append(_batch_uncertainty(mu, sigma))
            return x
        if not self.enabled or self.alpha == 0.0:
            return x
        if x.shape[0] > 1 and not self._one_at_a_time:
            spread_mu, spread_sigma = _batch_uncertainty(mu, sigma)
        elif name in self.recorded:
            spread_mu, spread_sigma = (s.to(x.device, x.dtype).view(mu.shape[1:])
                                       for s in self.recorded[name])
        else:
            spread_mu = spread_sigma = sigma
        if self._given is not None:  # already counted by presample(); may be batched tensors under vmap
            eps_mu, eps_sigma = (e.reshape((-1,) + self._draw_shapes[name][0]) for e in self._given[name])
        elif self.weigh_samples:
            raise FisherTuneError("a perturbation that weighs samples takes its draws from presample()")
        else:
            generator = self._generator(x.device)
            eps_mu = torch.randn(channel_shape, generator=generator, device=x.device, dtype=x.dtype)
            eps_sigma = torch.randn(channel_shape, generator=generator, device=x.device, dtype=x.dtype)
            self._account(eps_mu, eps_sigma)
        new_mu = mu + self.alpha * eps_mu * spread_mu
        new_sigma = sigma + self.alpha * eps_sigma * spread_sigma
        return (x - mu) / sigma * new_sigma + new_mu

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]


def _batch_uncertainty(mu: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DSU's Σ: the std across the batch of the channel means and of the channel stds."""
    spread_mu = (mu.var(dim=0, keepdim=True) + STAT_EPS).sqrt()
    spread_sigma = (sigma.var(dim=0, keepdim=True) + STAT_EPS).sqrt()
    return spread_mu, spread_sigma


class _Recording:
    def __init__(self, perturbation: FeaturePerturbation):
        self.perturbation = perturbation

    def __enter__(self) -> FeaturePerturbation:
        self.perturbation._recording = {}
        return self.perturbation

    def __exit__(self, *exc) -> None:
        p = self.perturbation
        for name, pairs in (p._recording or {}).items():
            p.recorded[name] = tuple(torch.stack([pair[i].detach() for pair in pairs]).mean(0).squeeze(0)
                                     for i in range(2))
        p._recording = None


class _Using:
    def __init__(self, perturbation: FeaturePerturbation, draws: dict, one_at_a_time: bool):
        self.perturbation, self.draws, self.one_at_a_time = perturbation, draws, one_at_a_time

    def __enter__(self) -> FeaturePerturbation:
        self.perturbation._given, self.perturbation._one_at_a_time = self.draws, self.one_at_a_time
        return self.perturbation

    def __exit__(self, *exc) -> None:
        self.perturbation._given, self.perturbation._one_at_a_time = None, False
