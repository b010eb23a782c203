"""The variational update before the memory-lean one (per-parameter h, σ and both gradients of a pair
held at once, the difference formed out of place), kept verbatim as the reference that
`fishertune.sparse.variational.VariationalCurvature` must match: bit for bit for ivon, to float rounding
for vogn (whose squares are added into the running curvature's buffer)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from fishertune.sparse.batching import batch_size
from fishertune.sparse.fisher import _all_reduce, _named_params, _requiring_grad, fisher_sums


class ReferenceCurvature:
    def __init__(self, model, loss_fn, names, settings, **fisher_options):
        self.model, self.loss_fn, self.curvature = model, loss_fn, settings.curvature
        self.gamma, self.tau, self.samples = settings.gamma, settings.tau, settings.samples
        self.fisher_options = fisher_options
        self.named = _named_params(model, names)
        self.h = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                  for n, p in self.named.items()}
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.seen = 0

    @property
    def prior_floor(self):
        return self.gamma / (self.tau * self.tau)

    def posterior_std(self, name):
        numerator = self.tau * self.tau * self.gamma
        if numerator == 0.0:
            return torch.zeros_like(self.h[name])
        return (numerator / (self.gamma + self.tau * self.tau * self.h[name])).sqrt()

    def update(self, batch, perturbation=None):
        mean = {n: p.detach().clone() for n, p in self.named.items()}
        std = {n: self.posterior_std(n) for n in self.named}
        try:
            if self.curvature == "vogn":
                estimate, count = self._squared_gradients(batch, mean, std, perturbation)
            else:
                estimate, count = self._reparameterised_hessian(batch, mean, std, perturbation)
        finally:
            self._set_weights(mean, std, None, 0.0)
        self.seen += count
        rho = count / self.seen
        floor = self.prior_floor
        for name, h in self.h.items():
            step = estimate[name] - h
            correction = 0.5 * rho * rho * step.square() / (h + floor) if self.curvature == "ivon" else 0
            h.add_(rho * step + correction)

    def _noise(self):
        return {n: torch.randn(p.shape, generator=self.generator).to(p.device) for n, p in self.named.items()}

    @torch.no_grad()
    def _set_weights(self, mean, std, noise, sign):
        for name, p in self.named.items():
            if noise is None:
                p.copy_(mean[name])
            else:
                p.copy_((mean[name].float() + sign * std[name] * noise[name]).to(p.dtype))

    def _squared_gradients(self, batch, mean, std, perturbation):
        total = {}
        for s in range(self.samples):  # antithetic pairs ±ξ (the update's semantics since 2026-12-06)
            if s % 2 == 0:
                noise = self._noise()
            self._set_weights(mean, std, noise, 1.0 if s % 2 == 0 else -1.0)
            sums, count = fisher_sums(self.model, [batch], self.loss_fn, list(self.named),
                                      perturbation=perturbation, **self.fisher_options)
            for name in self.named:
                total[name] = total[name] + sums[name] if name in total else sums[name]
        return {n: t / (self.samples * count) for n, t in total.items()}, count

    def _reparameterised_hessian(self, batch, mean, std, perturbation):
        size = batch_size(batch)
        sums = {n: torch.zeros_like(h) for n, h in self.h.items()}
        for _ in range(self.samples):
            noise = self._noise()
            draws = perturbation.presample(size) if perturbation is not None else None
            grads = []
            for sign in (1.0, -1.0):
                self._set_weights(mean, std, noise, sign)
                grads.append(self._mean_loss_gradient(batch, perturbation, draws))
            for name in self.named:
                sums[name].add_((grads[0][name] - grads[1][name]) * noise[name] / (2 * std[name]))
        sums, count = _all_reduce({n: s * size for n, s in sums.items()}, size)
        return {n: s / (self.samples * count) for n, s in sums.items()}, count

    def _mean_loss_gradient(self, batch, perturbation, draws):
        params = list(self.named.values())
        with _requiring_grad(self.named), (perturbation.using(draws) if draws is not None
                                           else nullcontext()):
            loss = self.loss_fn(self.model, batch).mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        return {n: (torch.zeros_like(self.h[n]) if g is None else g.detach().float())
                for n, g in zip(self.named, grads)}
