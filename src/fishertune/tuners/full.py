"""Full fine-tuning of every backbone weight, with optional layer-wise learning-rate decay.

Layer-wise decay (Clark et al., ELECTRA 2020; BEiT 2021): layer ids run 0 (patch/position embeddings,
class and register tokens) .. L (block L-1) .. L+1 (anything after the blocks, e.g. the final norm); a
parameter of layer id d trains at lr · decay^(L+1-d), so the top keeps the base lr and the embeddings
move least.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fishertune.tuners.base import Tuner, TunerConfig, register_tuner, require
from fishertune.tuners.blocks import block_module, blocks_of

EMBEDDING_NAMES = ("embed", "cls_token", "register", "mask_token", "pos_")


@dataclass
class FullConfig(TunerConfig):
    """Full fine-tuning's one option: layer-wise learning-rate decay (1.0: none)."""

    layer_decay: float = field(default=1.0, metadata={
        "help": "layer-wise lr decay: a weight at depth k below the top trains at lr·layer_decay^k "
                "(1.0 = one lr for all)"})

    def __post_init__(self):
        require(0.0 < self.layer_decay <= 1.0, f"layer_decay must be in (0, 1], got {self.layer_decay}")


@register_tuner
class FullTuner(Tuner):
    """Trains every backbone weight (AdamW), optionally with layer-wise lr decay (ELECTRA, Clark et al.,
    2020). Default: no decay."""

    name = "full"
    paper = "full fine-tuning (layer-wise lr decay: Clark et al., ELECTRA, 2020)"
    config_class = FullConfig

    @classmethod
    def count_trainable(cls, model: nn.Module, config: FullConfig) -> int:
        return sum(p.numel() for p in model.backbone.parameters())

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"backbone.{n}", p) for n, p in self.backbone.named_parameters()]

    def layer_ids(self) -> dict[str, int]:
        """Layer id of every backbone parameter (name relative to `model`), as in the module docstring."""
        blocks = blocks_of(self.model)
        in_block = {id(p): i + 1 for i, block in enumerate(blocks) for p in block_module(block).parameters()}
        top = len(blocks) + 1
        ids = {}
        for name, p in self.trainable_named_parameters():
            if id(p) in in_block:
                ids[name] = in_block[id(p)]
            else:
                ids[name] = 0 if any(key in name for key in EMBEDDING_NAMES) else top
        return ids

    def build_optimizer(self, *, lr: float, head_lr: float, weight_decay: float,
                        betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        if self.config.layer_decay == 1.0:
            return super().build_optimizer(lr=lr, head_lr=head_lr, weight_decay=weight_decay, betas=betas)
        self._set_trainable()
        ids = self.layer_ids()
        top = len(blocks_of(self.model)) + 1
        groups = [{"params": list(self.model.head.parameters()), "lr": head_lr}]
        for depth in sorted(set(ids.values())):
            params = [p for name, p in self.trainable_named_parameters() if ids[name] == depth]
            groups.append({"params": params, "lr": lr * self.config.layer_decay ** (top - depth),
                           "layer_id": depth})
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas)
