"""Sparse fine-tuning baselines: a fixed mask over the backbone's own weights, trained with MaskedAdamW.

All of them run on `fishertune.sparse.MaskSelector` (estimate → select → masked AdamW → sparse delta) and
differ only in how entries are scored:
- childtune: ChildTune-D (Xu et al., EMNLP 2021): Fisher over the task data from squared mini-batch
  gradients, F_i = (1/N) Σ_b B_b·ḡ_{b,i}² (its reference code accumulates grad² of each batch), top-p.
- fish: FISH mask (Sung et al., NeurIPS 2021): per-sample squared gradients, F_i = (1/N) Σ_n g_{n,i}²,
  global top-k.
- random: uniformly random entries (seeded), the same budget.
The mask is chosen once in `prepare` and stays fixed. Unselected entries keep their pretrained values bit
for bit, so the method saves a sparse delta (indices + values, safetensors) against the base.

Budget, one value for every mask method: `budget` <= 1 is a fraction of the candidate backbone weights,
`budget` > 1 a count of them. Candidates are all backbone weights (`backbone.*`) unless `include`/
`exclude` globs (on Segmentor parameter names, e.g. "backbone.model.embeddings.*") say otherwise.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from safetensors import safe_open
from torch import nn

from fishertune.atomic import write_json
from fishertune.errors import FisherTuneError
from fishertune.sparse import (
    MaskedAdamW,
    MaskSelector,
    MaskSelectorConfig,
    candidate_names,
    load_delta,
    read_delta_config,
)
from fishertune.sparse.delta import checked_delta
from fishertune.tuners.base import Tuner, TunerConfig, register_tuner, require

DELTA_FILE = "delta.safetensors"
SELECTION_FILE = "selection.json"
BACKBONE = "backbone.*"


@dataclass
class MaskConfig(TunerConfig):
    """The mask baselines' options: budget (default 5%), candidates and per-tensor cap."""

    budget: float = field(default=0.05, metadata={
        "help": "selected backbone weights: a fraction of the candidates (<= 1) or a count (> 1)"})
    include: list[str] | None = field(default=None, metadata={
        "help": "glob patterns of candidate parameter names (default: every backbone weight)"})
    exclude: list[str] = field(default_factory=list, metadata={
        "help": "glob patterns of parameter names never selected, e.g. '*embeddings*'"})
    max_per_tensor: float | None = field(default=None, metadata={
        "help": "cap on the selected fraction of any one tensor (None: no cap)"})
    seed: int = field(default=0, metadata={"help": "seed of the random scores (random method)"})

    def __post_init__(self):
        check_budget(self.budget)

    @property
    def ratio(self) -> float | None:
        return budget_fields(self.budget)["ratio"]

    @property
    def count(self) -> int | None:
        return budget_fields(self.budget)["count"]


def check_budget(budget: float) -> None:
    require(budget > 0 and (budget <= 1 or float(budget).is_integer()),
            f"budget must be a fraction in (0, 1] or a whole count > 1, got {budget}")


def budget_fields(budget: float) -> dict[str, Any]:
    """MaskSelectorConfig's ratio/count for a `budget` value."""
    return {"ratio": float(budget), "count": None} if budget <= 1 else {"ratio": None, "count": int(budget)}


def backbone_candidates(model: nn.Module, include: list[str] | None, exclude: list[str]) -> list[str]:
    """Candidate names: the include globs (default all backbone weights), never the head."""
    names = [n for n, _ in model.named_parameters() if n.startswith("backbone.")]
    return candidate_names(names, include or [BACKBONE], exclude)


def load_selection(directory: str) -> dict[str, Any]:
    """What a saved mask tuner selected, for plots: {"masks": {name: BoolTensor}, "history": [...],
    "scores": {name: Tensor}} where each tensor's scores are its mean score repeated (an expanded view,
    no memory): the selection file keeps per-tensor score sums, not the full score tensors."""
    with open(os.path.join(directory, SELECTION_FILE)) as f:
        summary = json.load(f)
    masks = {}
    with safe_open(os.path.join(directory, DELTA_FILE), framework="pt") as f:
        for name, spec in read_delta_config(os.path.join(directory, DELTA_FILE))["tensors"].items():
            mask = torch.zeros(math.prod(spec["shape"]), dtype=torch.bool)
            mask[f.get_tensor(f"{name}.indices")] = True
            masks[name] = mask.view(spec["shape"])
    for name, numel in summary["numel"].items():  # candidates the delta does not touch
        masks.setdefault(name, torch.zeros(numel, dtype=torch.bool))
    scores = {n: torch.tensor(summary["score_sum"][n] / max(k, 1)).expand(k)
              for n, k in summary["numel"].items()}
    return {"masks": masks, "history": summary["history"], "scores": scores}


class MaskTuner(Tuner):
    """A MaskSelector over the segmentor's backbone weights; subclasses say how it scores."""

    fisher_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        self.selector = MaskSelector(model, self.selector_config())

    def selector_config(self) -> MaskSelectorConfig:
        c = self.config
        return MaskSelectorConfig(**budget_fields(c.budget), include=c.include or [BACKBONE],
                                exclude=[*c.exclude, "head.*"], max_per_tensor=c.max_per_tensor, seed=c.seed,
                                **self.fisher_options)

    @classmethod
    def count_trainable(cls, model: nn.Module, config: MaskConfig) -> int:
        """The final budget: ⌊ratio·N + ½⌋ of the N candidate entries, or the count."""
        if config.count is not None:
            return int(config.count)
        params = dict(model.named_parameters())
        total = sum(params[n].numel() for n in backbone_candidates(model, config.include, config.exclude))
        return int(config.ratio * total + 0.5)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return self.selector.masks

    def num_trainable(self) -> int:
        if not self.masks:  # before prepare: what the selection will give
            return self.count_trainable(self.model, self.config)
        return self.selector.num_selected()

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Tensors with selected entries (only those entries train)."""
        params = dict(self.model.named_parameters())
        return [(n, params[n]) for n, m in self.masks.items() if bool(m.any())]

    def prepare(self, batches: Iterable[dict], loss_fn: Callable[[nn.Module, dict], torch.Tensor]) -> None:
        self.selector.estimate(batches, loss_fn)
        self.selector.select(step=0)
        self.selector.release_estimates()

    def build_optimizer(self, *, lr: float, head_lr: float, weight_decay: float,
                        betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        """MaskedAdamW: the head dense at head_lr, the candidate backbone weights masked at lr."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for p in self.model.head.parameters():
            p.requires_grad_(True)
        params = dict(self.model.named_parameters())
        groups = [{"params": list(self.model.head.named_parameters(prefix="head")), "lr": head_lr},
                  {"params": [(n, params[n]) for n in self.selector.candidates], "lr": lr}]
        return self.selector.build_optimizer(groups, lr=lr, weight_decay=weight_decay, betas=betas)

    def after_step(self, step: int, total_steps: int, batches: Iterable[dict],
                   loss_fn: Callable[[nn.Module, dict], torch.Tensor], optimizer: MaskedAdamW) -> None:
        self.selector.after_step(step, total_steps, batches, loss_fn, optimizer)
        self.selector.release_estimates()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.selector.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.selector.load_state_dict(state)

    def save_pretrained(self, directory: str) -> None:
        super().save_pretrained(directory)
        self.selector.save_delta(os.path.join(directory, DELTA_FILE))
        scores = self.selector.scores
        write_json(os.path.join(directory, SELECTION_FILE),
                   {"history": self.selector.history,
                    "score_sum": {n: float(t.double().sum()) for n, t in scores.items()},
                    "numel": {n: t.numel() for n, t in scores.items()}})

    def saved_tensors(self) -> dict[str, torch.Tensor]:
        return {}  # the sparse delta is the only tensor file

    def load_pretrained(self, directory: str) -> None:
        """Apply the delta onto the base, and take its entries as the masks (base values kept to resume)."""
        path = os.path.join(directory, DELTA_FILE)
        params = dict(self.model.named_parameters())
        names = list(read_delta_config(path)["tensors"])
        strangers = [n for n in names if n not in self.selector.candidates]
        if strangers:
            raise FisherTuneError(f"the saved delta changes {strangers[0]!r}, which is not a candidate "
                                  f"weight of this {self.name} tuner's model")
        _, entries = checked_delta(self.model, path)  # indices, values and base hashes, before any use
        state = {}
        for name, (index, _) in entries.items():
            p = params[name]
            index = index.to(p.device)
            mask = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            mask[index] = True
            state[f"mask.{name}"] = mask.view(p.shape)
            state[f"base.{name}"] = p.detach().reshape(-1)[index].clone()
        load_delta(self.model, path)
        for name in self.selector.candidates:
            state.setdefault(f"mask.{name}", torch.zeros_like(params[name], dtype=torch.bool))
            state.setdefault(f"base.{name}", params[name].new_empty(0))
        self.selector.load_state_dict(state)


@register_tuner
class ChildTuneTuner(MaskTuner):
    """Trains a fixed top-p mask of backbone entries scored by squared mini-batch gradients;
    ChildTune-D, Xu et al., EMNLP 2021. Default budget 5%."""

    name = "childtune"
    paper = "ChildTune-D (Xu et al., EMNLP 2021)"
    config_class = MaskConfig
    fisher_options = {"score": "fim", "per_sample": False}


@register_tuner
class FishMaskTuner(MaskTuner):
    """Trains a fixed global top-k mask scored by per-sample squared gradients; FISH mask,
    Sung et al., NeurIPS 2021. Default budget 5%."""

    name = "fish"
    paper = "FISH mask (Sung et al., NeurIPS 2021)"
    config_class = MaskConfig
    fisher_options = {"score": "fim", "per_sample": True}


@register_tuner
class RandomMaskTuner(MaskTuner):
    """Trains a fixed, uniformly random mask of the same budget (default 5%), seeded by the run:
    the control for every scored mask."""

    name = "random"
    paper = "random mask of the same size (control)"
    config_class = MaskConfig
    fisher_options = {"score": "random"}


