"""Tiny models and per-sample losses for the method-core tests (a uniquely named module, so that
spawned test processes import it unambiguously)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in: int = 6, hidden: int = 8, classes: int = 3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.unused = nn.Linear(2, 2)  # receives no gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5).softmax(-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    """A plain-torch ViT: patch embedding, cls token, position embedding, blocks, linear head on cls."""

    def __init__(self, dim: int = 16, depth: int = 2, heads: int = 2, patch: int = 4, image: int = 8,
                 classes: int = 3):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def classification_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return F.cross_entropy(model(batch["x"]), batch["y"], reduction="none")


def make_batches(sizes, shape, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(n, *shape, generator=g), "y": torch.randint(0, classes, (n,), generator=g),
             "name": [f"s{i}" for i in range(n)]} for n in sizes]


def brute_force_fisher(model, batches, loss_fn, names):
    """Reference: one sample at a time, plain autograd, sum of squares / N."""
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(params[n]) for n in names}
    count = 0
    for batch in batches:
        for i in range(batch["y"].shape[0]):
            one = {"x": batch["x"][i:i + 1], "y": batch["y"][i:i + 1], "name": batch["name"]}
            model.zero_grad()
            loss_fn(model, one).sum().backward()
            for n in names:
                if params[n].grad is not None:
                    sums[n] += params[n].grad.square()
            count += 1
    model.zero_grad()
    return {n: s / count for n, s in sums.items()}
