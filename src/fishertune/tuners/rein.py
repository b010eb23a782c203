"""Rein (Wei et al., "Stronger, Fewer, & Superior", CVPR 2024): learnable tokens refine every block.

For block i with output patch features f [N, D] and m learnable tokens T_i = A_i · B_i
(A_i: m×r, B_i: r×D, the low-rank factorisation of the paper's "Rein-LoRA"):

    S   = softmax(f · T_iᵀ / sqrt(D))                   [N, m]   token–feature similarity
    Δf  = S[:, 1:] · MLP_t2f(T_i[1:])                    [N, D]
    f'  = f + scale · MLP_out(Δf + f)

MLP_t2f and MLP_out are linear layers shared by all blocks; `scale` is a learnable scalar initialised
small. As in the reference implementation, token 0 takes part in the softmax but carries no value (it
lets a feature attend to "nothing"), and MLP_out sees Δf + f. Only patch tokens are refined: class and
register tokens pass through untouched. MLP_out starts at zero, so at initialisation the backbone's
output equals the plain backbone's (the reference's `zero_mlp_delta_f` option; here the scale stays
learnable as well).

With `link_queries` the tokens also serve a Mask2Former-style head as extra object queries, as Rein's
"link_token_to_query" does: Q = merge(concat(max_i, mean_i, last)(transform(T_i))) [m, q], with the
linear layers transform: D -> q and merge: 3q -> q (q the head's query width) trained with the tokens.
The head calls `ReinTuner.query_tokens()` at every forward (through its `extra_queries` attribute), so
the tokens learn from the decoder as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.tuners.base import Tuner, TunerConfig, register_tuner, require, seeded
from fishertune.tuners.blocks import blocks_of, hook_block_outputs


@dataclass
class ReinConfig(TunerConfig):
    """Rein's options; the defaults (100 tokens of rank 16, scale 1e-3) follow its reference code."""

    num_tokens: int = field(default=100, metadata={"help": "m: learnable tokens per block"})
    token_rank: int = field(default=16, metadata={"help": "r: rank of the token factorisation T = A·B"})
    scale_init: float = field(default=1e-3, metadata={"help": "initial value of the learnable output scale"})
    link_queries: bool = field(default=False, metadata={
        "help": "also feed the tokens to a Mask2Former-style head as extra object queries"})
    seed: int = field(default=0, metadata={"help": "seed of the token and MLP initialisation"})

    def __post_init__(self):
        require(isinstance(self.num_tokens, int) and self.num_tokens >= 2,
                f"num_tokens must be an integer >= 2 (token 0 carries no value), got {self.num_tokens!r}")
        require(isinstance(self.token_rank, int) and self.token_rank >= 1,
                f"token_rank must be a positive integer, got {self.token_rank!r}")


class Reins(nn.Module):
    """The Rein parameters of a whole backbone and the refinement f -> f' of the module docstring."""

    def __init__(self, num_layers: int, dim: int, patch_size: int, num_tokens: int, token_rank: int,
                 scale_init: float):
        super().__init__()
        self.dim = dim
        self.tokens_a = nn.Parameter(torch.empty(num_layers, num_tokens, token_rank))
        self.tokens_b = nn.Parameter(torch.empty(num_layers, token_rank, dim))
        # Xavier-style bound of the reference, with fan-in 3·p² (an RGB patch) and fan-out sqrt(D·r).
        bound = math.sqrt(6.0 / (3 * patch_size**2 + math.sqrt(dim * token_rank)))
        nn.init.uniform_(self.tokens_a, -bound, bound)
        nn.init.uniform_(self.tokens_b, -bound, bound)
        self.mlp_token2feat = nn.Linear(dim, dim)
        self.mlp_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.mlp_out.weight)
        nn.init.zeros_(self.mlp_out.bias)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def tokens(self, layer: int) -> torch.Tensor:
        return self.tokens_a[layer] @ self.tokens_b[layer]

    def forward(self, feats: torch.Tensor, layer: int) -> torch.Tensor:
        """feats [..., N, D] patch features of block `layer` -> refined features, same shape."""
        tokens = self.tokens(layer)
        attn = F.softmax(feats @ tokens.T / math.sqrt(self.dim), dim=-1)
        delta = attn[..., 1:] @ self.mlp_token2feat(tokens[1:])
        return feats + self.scale * self.mlp_out(delta + feats)


def query_width(head: nn.Module) -> int:
    """Width of the object queries of a head that takes extra queries (the Mask2Former-style head)."""
    if not hasattr(head, "extra_queries") or not hasattr(head, "query_feat"):
        raise FisherTuneError(f"link_queries needs a head that takes extra object queries (mask2former), "
                              f"not {type(head).__name__}")
    return head.query_feat.embedding_dim


@register_tuner
class ReinTuner(Tuner):
    """Trains Rein's low-rank tokens and shared MLPs, which refine every block's patch features (the
    backbone stays frozen); Rein, Wei et al., CVPR 2024. Defaults: 100 tokens, rank 16, scale 1e-3."""

    name = "rein"
    size_knob = ("num_tokens", 2)
    paper = "Rein (Wei et al., CVPR 2024)"
    config_class = ReinConfig

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        c, backbone = self.config, model.backbone
        blocks = blocks_of(model)
        with seeded(c.seed):
            backbone.reins = Reins(len(blocks), backbone.embed_dim, backbone.patch_size, c.num_tokens,
                                   c.token_rank, c.scale_init)
            if c.link_queries:
                dim, width = backbone.embed_dim, query_width(model.head)
                backbone.reins.transform = nn.Linear(dim, width)
                backbone.reins.merge = nn.Linear(3 * width, width)
                model.head.extra_queries = self.query_tokens
        self.prefix = backbone.num_prefix_tokens
        self.handles = hook_block_outputs(blocks, self._refine)

    @property
    def reins(self) -> Reins:
        return self.backbone.reins

    def _refine(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Refine the patch tokens; the result keeps the block's dtype (bf16 under autocast)."""
        prefix, patches = hidden[:, :self.prefix], hidden[:, self.prefix:]
        return torch.cat([prefix, self.reins(patches, layer).to(hidden.dtype)], dim=1)

    @classmethod
    def count_trainable(cls, model: nn.Module, config: ReinConfig) -> int:
        """L·(m·r + r·D) token factors + 2·(D² + D) shared MLPs + 1 scale, and with link_queries
        (D·q + q) + (3q·q + q) for transform and merge."""
        layers, dim = len(blocks_of(model)), model.backbone.embed_dim
        count = layers * config.token_rank * (config.num_tokens + dim) + 2 * (dim * dim + dim) + 1
        if config.link_queries:
            q = query_width(model.head)
            count += dim * q + q + 3 * q * q + q
        return count

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"backbone.reins.{n}", p) for n, p in self.reins.named_parameters()]

    def query_tokens(self) -> torch.Tensor:
        """[m, q] object queries from the tokens of all layers (module docstring); needs link_queries."""
        if not self.config.link_queries:
            raise FisherTuneError("Rein's query tokens need the option link_queries: true")
        tokens = self.reins.transform(self.reins.tokens_a @ self.reins.tokens_b)  # [L, m, q]
        return self.reins.merge(torch.cat([tokens.amax(0), tokens.mean(0), tokens[-1]], dim=-1))
