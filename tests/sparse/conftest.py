"""Fixtures of the method-core tests; the models and losses live in tiny_models.py."""

import pytest
import torch
from tiny_models import MLP, TinyViT


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP()


@pytest.fixture
def vit():
    torch.manual_seed(0)
    return TinyViT().eval()
