"""VPT-deep (Jia et al., "Visual Prompt Tuning", ECCV 2022): p learnable prompt tokens per block.

Before block i the prompts P_i [p, D] are inserted right after the prefix tokens (class, registers),
and after the block the p outputs at those positions are dropped, so the next block sees fresh prompts
P_{i+1} and everything downstream sees the original token count. Prompts are initialised uniformly
with VPT's Xavier bound sqrt(6 / (3·patch² + D)). Unlike the zero-initialised adapters, prompts change
attention from the first step: VPT's output at initialisation is not the base backbone's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.tuners.base import Tuner, TunerConfig, register_tuner, require, seeded
from fishertune.tuners.blocks import blocks_of, hook_block_inputs, hook_block_outputs


@dataclass
class VptConfig(TunerConfig):
    """VPT's options: prompts per block (default 10) and the initialisation seed."""

    num_prompts: int = field(default=10, metadata={"help": "p: prompt tokens inserted before every block"})
    seed: int = field(default=0, metadata={"help": "seed of the prompt initialisation"})

    def __post_init__(self):
        require(isinstance(self.num_prompts, int) and self.num_prompts >= 1,
                f"num_prompts must be a positive integer, got {self.num_prompts!r}")


@register_tuner
class VptTuner(Tuner):
    """Trains p prompt tokens inserted before every block (the backbone stays frozen); VPT-deep, Jia et al.,
    ECCV 2022. Default: 10 prompts per block."""

    name = "vpt"
    size_knob = ("num_prompts", 1)
    paper = "VPT-deep (Jia et al., ECCV 2022)"
    config_class = VptConfig

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        backbone, p = model.backbone, self.config.num_prompts
        blocks = blocks_of(model)
        if any(hasattr(block, "grid") for block in blocks):
            raise FisherTuneError(f"VPT cannot insert prompts into {type(backbone).__name__}: its blocks "
                                  "fold the tokens into a fixed spatial grid (windowed attention)")
        bound = math.sqrt(6.0 / (3 * backbone.patch_size**2 + backbone.embed_dim))
        with seeded(self.config.seed):
            prompts = torch.empty(len(blocks), p, backbone.embed_dim).uniform_(-bound, bound)
        backbone.vpt_prompts = nn.Parameter(prompts)
        self.prefix = backbone.num_prefix_tokens
        self.handles = hook_block_inputs(blocks, self._insert) + hook_block_outputs(blocks, self._remove)

    def _insert(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() != 3:
            raise FisherTuneError("VPT needs blocks over token sequences [B, T, D]; this backbone's "
                                  f"blocks take {hidden.dim()}-d inputs")
        prompts = self.backbone.vpt_prompts[layer].to(hidden.dtype).expand(hidden.shape[0], -1, -1)
        return torch.cat([hidden[:, :self.prefix], prompts, hidden[:, self.prefix:]], dim=1)

    def _remove(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        p = self.config.num_prompts
        return torch.cat([hidden[:, :self.prefix], hidden[:, self.prefix + p:]], dim=1)

    @classmethod
    def count_trainable(cls, model: nn.Module, config: VptConfig) -> int:
        """L·p·D."""
        return len(blocks_of(model)) * config.num_prompts * model.backbone.embed_dim

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [("backbone.vpt_prompts", self.backbone.vpt_prompts)]
