"""Mask2Former-style mask-classification head (Cheng et al. 2022) on the light ViT feature pyramid.

Pixel decoder: the ViTDet-style pyramid with FPN fusion (`pyramid.py`) instead of Mask2Former's deformable
encoder. Its finest level (stride p/4) gives the per-pixel mask embeddings; the coarser ones (coarse to
fine, round-robin) are the memory of a transformer decoder whose N queries alternate masked cross-attention
(each query attends only where its previous mask prediction has sigmoid >= 0.5), self-attention and an FFN.
After every layer, each query predicts class logits over C+1 classes (the last is "no object") and a mask
(dot product of its embedding with the mask features). Training: Hungarian-matched set loss on every
layer's prediction (deep supervision). Semantic scores: Σ_q softmax(class_q)[:C] · sigmoid(mask_q).

Extra queries from outside (e.g. Rein's tokens): pass `extra_queries` to `forward`, or set the attribute
`head.extra_queries` to a Tensor [M, D] / [B, M, D] or to a zero-argument callable returning one (so a
tuner can hand in fresh, differentiable tokens at every forward). They are appended to the learned query
features (with zero query position), predict classes and masks, and are matched like the learned queries.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fishertune.errors import InputError
from fishertune.label_space import NUM_CLASSES
from fishertune.models.heads.base import DecodeHead, register_head
from fishertune.models.heads.pyramid import FeaturePyramid
from fishertune.models.losses import MaskClassificationLoss


def sine_position_embedding(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """DETR's normalised 2-D sine embedding [h*w, dim]: first half encodes y, second half x."""
    half = dim // 2
    freq = 10000 ** (2 * (torch.arange(half, device=device) // 2) / half)
    y = (torch.arange(height, device=device) + 0.5) / height * 2 * math.pi
    x = (torch.arange(width, device=device) + 0.5) / width * 2 * math.pi

    def encode(t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] / freq
        return torch.where(torch.arange(half, device=device) % 2 == 0, angles.sin(), angles.cos())

    pos_y = encode(y)[:, None].expand(height, width, half)
    pos_x = encode(x)[None].expand(height, width, half)
    return torch.cat([pos_y, pos_x], dim=-1).reshape(height * width, 2 * half)


class MaskedAttentionLayer(nn.Module):
    """Post-norm decoder layer: masked cross-attention -> self-attention -> FFN, each with residual + LN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_self = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(self, queries, query_pos, memory, memory_pos, attn_mask):
        attended = self.cross_attn(queries + query_pos, memory + memory_pos, memory, attn_mask=attn_mask,
                                   need_weights=False)[0]
        queries = self.norm_cross(queries + attended)
        q = queries + query_pos
        queries = self.norm_self(queries + self.self_attn(q, q, queries, need_weights=False)[0])
        return self.norm_ffn(queries + self.ffn(queries))


@register_head
class Mask2FormerHead(DecodeHead):
    """Output: {"class_logits": [B, N, C+1], "mask_logits": [B, N, h, w], "aux": [(class, mask), ...]}."""

    name = "mask2former"
    tiny_config = {"hidden_dim": 16, "num_queries": 8, "num_layers": 3, "num_heads": 2, "ffn_dim": 32}

    @classmethod
    def check_options(cls, options: dict) -> None:
        hidden, heads = options.get("hidden_dim", 256), options.get("num_heads", 8)
        if hidden % heads:
            raise InputError(f"model.head_options: hidden_dim {hidden} is not divisible by num_heads {heads}")

    def __init__(self, in_channels: int, num_levels: int, num_classes: int = NUM_CLASSES,
                 hidden_dim: int = 256, num_queries: int = 100, num_layers: int = 9, num_heads: int = 8,
                 ffn_dim: int = 2048,
                 scales: tuple[float, ...] | None = None, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object_weight: float = 0.1, deep_supervision: bool = True):
        super().__init__(in_channels, num_levels, num_classes)
        self.pyramid = FeaturePyramid(in_channels, num_levels, hidden_dim, scales)
        self.mask_proj = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=1)
        self.num_memory_levels = max(1, num_levels - 1)
        self.level_embed = nn.Embedding(self.num_memory_levels, hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_pos = nn.Embedding(num_queries, hidden_dim)
        self.layers = nn.ModuleList(MaskedAttentionLayer(hidden_dim, num_heads, ffn_dim)
                                    for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                        nn.Linear(hidden_dim, hidden_dim))
        self.num_heads = num_heads
        self.deep_supervision = deep_supervision
        self.criterion = MaskClassificationLoss(num_classes, class_weight, mask_weight, dice_weight,
                                                no_object_weight)
        self.extra_queries: torch.Tensor | Callable[[], torch.Tensor] | None = None

    def _queries(self, batch: int, extra: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.query_feat.weight[None].expand(batch, -1, -1)
        pos = self.query_pos.weight[None].expand(batch, -1, -1)
        if extra is None:
            return feat, pos
        extra = extra[None] if extra.dim() == 2 else extra
        extra = extra.to(feat.dtype).expand(batch, -1, -1)
        return torch.cat([feat, extra], dim=1), torch.cat([pos, torch.zeros_like(extra)], dim=1)

    def _predict(self, queries, mask_features, attn_size):
        out = self.decoder_norm(queries)
        class_logits = self.class_embed(out)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(out), mask_features)
        resized = F.interpolate(mask_logits.detach(), size=attn_size, mode="bilinear", align_corners=False)
        blocked = resized.flatten(2).sigmoid() < 0.5
        blocked[blocked.all(-1)] = False  # a query with an empty mask attends everywhere
        attn_mask = blocked.repeat_interleave(self.num_heads, dim=0)
        return class_logits, mask_logits, attn_mask

    def forward(self, features: list[torch.Tensor], extra_queries: torch.Tensor | None = None) -> dict:
        if extra_queries is None and self.extra_queries is not None:
            extra_queries = self.extra_queries() if callable(self.extra_queries) else self.extra_queries
        levels = self.pyramid(features)
        mask_features = self.mask_proj(levels[0])
        coarse_first = levels[1:][::-1] if len(levels) > 1 else levels
        memory, memory_pos, sizes = [], [], []
        for i, level in enumerate(coarse_first):
            h, w = level.shape[-2:]
            memory.append(level.flatten(2).transpose(1, 2) + self.level_embed.weight[i])
            memory_pos.append(sine_position_embedding(h, w, level.shape[1], level.device).to(level.dtype))
            sizes.append((h, w))
        queries, query_pos = self._queries(mask_features.shape[0], extra_queries)
        predictions = []
        class_logits, mask_logits, attn_mask = self._predict(queries, mask_features, sizes[0])
        predictions.append((class_logits, mask_logits))
        for i, layer in enumerate(self.layers):
            k = i % len(memory)
            queries = layer(queries, query_pos, memory[k], memory_pos[k], attn_mask)
            class_logits, mask_logits, attn_mask = self._predict(queries, mask_features,
                                                                 sizes[(i + 1) % len(memory)])
            predictions.append((class_logits, mask_logits))
        return {"class_logits": class_logits, "mask_logits": mask_logits, "aux": predictions[:-1]}

    def logits(self, output: dict) -> torch.Tensor:
        """Semantic scores [B, C, h, w] = Σ_q softmax(class_q)[:C] · sigmoid(mask_q) (as Mask2Former)."""
        probs = output["class_logits"].float().softmax(-1)[..., :-1]
        return torch.einsum("bqc,bqhw->bchw", probs, output["mask_logits"].float().sigmoid())

    def loss(self, output: dict, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Set loss of the final prediction, plus every intermediate one when `deep_supervision`."""
        pairs = [(output["class_logits"], output["mask_logits"])]
        if self.deep_supervision:
            pairs += output["aux"]
        return sum(self.criterion(c, m, labels, reduction) for c, m in pairs)
