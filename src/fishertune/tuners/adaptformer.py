"""AdaptFormer (Chen et al., NeurIPS 2022): a bottleneck MLP beside each block's MLP.

In a pre-norm block x' = x + Attn(LN1(x)), out = x' + MLP(LN2(x')); AdaptFormer adds the parallel
branch s · up(ReLU(down(LN2(x')))) to `out` (down: D -> r, up: r -> D, s a fixed scale, 0.1 in the
paper). It is attached with hooks: one on the block's second norm keeps LN2(x'), one on the block adds
the branch. `up` starts at zero, so the backbone equals the base one at initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.tuners.base import Tuner, TunerConfig, register_tuner, require, seeded
from fishertune.tuners.blocks import block_module, blocks_of, hook_block_outputs

# The norm in front of the MLP, as each backbone family names it (DINOv2/EVA, CLIP/SAM, ViT/MAE).
MLP_NORM_NAMES = ("norm2", "layer_norm2", "layernorm_after")


@dataclass
class AdaptFormerConfig(TunerConfig):
    """AdaptFormer's options; the defaults (r = 64, s = 0.1) are the paper's."""

    bottleneck: int = field(default=64, metadata={"help": "r: hidden width of the adapter"})
    scale: float = field(default=0.1, metadata={"help": "s: fixed scale of the adapter branch"})
    dropout: float = field(default=0.0, metadata={"help": "dropout inside the adapter"})
    seed: int = field(default=0, metadata={"help": "seed of the down-projection initialisation"})

    def __post_init__(self):
        require(isinstance(self.bottleneck, int) and self.bottleneck >= 1,
                f"bottleneck must be a positive integer, got {self.bottleneck!r}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


class Adapter(nn.Sequential):
    """The parallel branch s · up(ReLU(down(x))), `up` zero-initialised."""

    def __init__(self, dim: int, bottleneck: int, dropout: float):
        super().__init__(nn.Linear(dim, bottleneck), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(bottleneck, dim))
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


def mlp_norm(block: nn.Module) -> nn.Module:
    layer = block_module(block)
    for name in MLP_NORM_NAMES:
        if isinstance(getattr(layer, name, None), nn.Module):
            return getattr(layer, name)
    raise FisherTuneError(f"AdaptFormer found no norm before the MLP in {type(block).__name__} "
                          f"(looked for {', '.join(MLP_NORM_NAMES)})")


@register_tuner
class AdaptFormerTuner(Tuner):
    """Trains one bottleneck adapter beside every block's MLP (the backbone stays frozen); AdaptFormer,
    Chen et al., NeurIPS 2022. Defaults: bottleneck 64, scale 0.1, no dropout."""

    name = "adaptformer"
    size_knob = ("bottleneck", 1)
    paper = "AdaptFormer (Chen et al., NeurIPS 2022)"
    config_class = AdaptFormerConfig

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        c, backbone = self.config, model.backbone
        blocks = blocks_of(model)
        with seeded(c.seed):
            backbone.adapters = nn.ModuleList(Adapter(backbone.embed_dim, c.bottleneck, c.dropout)
                                              for _ in blocks)
        self.normed: dict[int, torch.Tensor] = {}
        self.handles = [mlp_norm(block).register_forward_hook(self._keeper(i))
                        for i, block in enumerate(blocks)]
        self.handles += hook_block_outputs(blocks, self._add_branch)

    def _keeper(self, layer: int):
        def hook(module, args, output):
            self.normed[layer] = output
        return hook

    def _add_branch(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        normed = self.normed.pop(layer)
        # reshape: SAM's layers norm a [B, h, w, D] grid while its blocks pass [B, h*w, D] tokens
        branch = self.backbone.adapters[layer](normed).reshape_as(hidden)
        return (hidden + self.config.scale * branch).to(hidden.dtype)

    @classmethod
    def count_trainable(cls, model: nn.Module, config: AdaptFormerConfig) -> int:
        """L·(2·D·r + r + D)."""
        dim, r = model.backbone.embed_dim, config.bottleneck
        return len(blocks_of(model)) * (2 * dim * r + r + dim)

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"backbone.adapters.{n}", p) for n, p in self.backbone.adapters.named_parameters()]
