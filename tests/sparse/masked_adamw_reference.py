"""MaskedAdamW before the flat buffers (one small update per tensor), kept verbatim as the reference the
flat optimiser must match bit for bit."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from fishertune.errors import FisherTuneError

STATE_KEYS = ("exp_avg", "exp_avg_sq", "entry_step")


class ReferenceMaskedAdamW(torch.optim.Optimizer):
    def __init__(self, named_params: Iterable, masks: dict[str, torch.Tensor], lr: float = 1e-3,
                 weight_decay: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if lr < 0 or weight_decay < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise FisherTuneError(f"invalid MaskedAdamW settings: lr={lr}, weight_decay={weight_decay}, "
                                  f"betas={betas}, eps={eps}")
        groups = list(named_params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            group["params"] = list(group["params"])
            if not all(isinstance(item, tuple) and len(item) == 2 for item in group["params"]):
                raise FisherTuneError("MaskedAdamW takes named parameters: (name, parameter) pairs")
        super().__init__(groups, dict(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps))
        self.update_masks(masks)

    def _named(self) -> dict[str, torch.Tensor]:
        return {name: p for group in self.param_groups
                for name, p in zip(group["param_names"], group["params"])}

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """The current masks, rebuilt from the stored indices."""
        out = {}
        for name, p in self._named().items():
            if "index" in self.state[p]:
                mask = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
                mask[self.state[p]["index"]] = True
                out[name] = mask.view(p.shape)
        return out

    def update_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Switch to new masks; entries selected before and after keep their state, new ones start at 0."""
        named = self._named()
        for name, mask in masks.items():
            if name not in named:
                if bool(mask.any()):
                    raise FisherTuneError(f"mask for {name!r} selects entries of a parameter "
                                          "not given to MaskedAdamW")
                continue
            p = named[name]
            if mask.shape != p.shape:
                raise FisherTuneError(f"mask for {name!r} has shape {list(mask.shape)}, "
                                      f"parameter {list(p.shape)}")
            if not p.is_contiguous():
                raise FisherTuneError(f"masked parameter {name!r} must be contiguous")
            index = mask.reshape(-1).nonzero().squeeze(1).to(p.device)
            state = self.state[p]
            fresh = {"index": index,
                     "exp_avg": torch.zeros(index.numel(), dtype=p.dtype, device=p.device),
                     "exp_avg_sq": torch.zeros(index.numel(), dtype=p.dtype, device=p.device),
                     "entry_step": torch.zeros(index.numel(), dtype=torch.int32, device=p.device)}
            if "index" in state:
                old = state["index"]
                kept = torch.isin(old, index)
                position = torch.searchsorted(index, old[kept])
                for key in STATE_KEYS:
                    fresh[key][position] = state[key][kept]
            self.state[p] = fresh

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loading, except that the integer state (indices, step counts) keeps its dtype
        (torch casts every non-"step" tensor to the parameter's dtype, which would round indices)."""
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for saved_id, p in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id, {})
            for key in ("index", "entry_step"):
                if key in saved:
                    self.state[p][key] = saved[key].to(p.device).clone()

    def state_bytes(self) -> int:
        """Bytes held by the optimiser state tensors (indices included)."""
        return sum(v.numel() * v.element_size() for s in self.state.values() for v in s.values()
                   if isinstance(v, torch.Tensor))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "index" in state:
                    self._masked_step(p, state, lr, wd, beta1, beta2, eps)
                else:
                    self._dense_step(p, state, lr, wd, beta1, beta2, eps)
        return loss

    @staticmethod
    def _dense_step(p, state, lr, wd, beta1, beta2, eps) -> None:
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"].item()
        grad = p.grad
        p.mul_(1 - lr * wd)
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(state["exp_avg"], denom, value=-lr / bias_correction1)

    @staticmethod
    def _masked_step(p, state, lr, wd, beta1, beta2, eps) -> None:
        index = state["index"]
        if index.numel() == 0:
            return
        flat = p.view(-1)
        grad = p.grad.reshape(-1).index_select(0, index)
        value = flat.index_select(0, index)
        state["entry_step"] += 1
        step = state["entry_step"].float()
        bias_correction1 = _one_minus_power(beta1, step).to(p.dtype)
        bias_correction2_sqrt = _one_minus_power(beta2, step).sqrt().to(p.dtype)
        value.mul_(1 - lr * wd)
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
        value.sub_(lr * state["exp_avg"] / (bias_correction1 * denom))
        flat.index_copy_(0, index, value)


def _one_minus_power(beta: float, step: torch.Tensor) -> torch.Tensor:
    """1 − β^t for a vector of step counts, as −expm1(t·ln β) (one exp instead of a pow per entry)."""
    if beta == 0.0:
        return torch.ones_like(step)
    return -torch.expm1(step * math.log(beta))
