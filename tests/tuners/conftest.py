"""Fixtures of the tuner tests; models and the loss live in tuner_helpers.py."""

import pytest
import torch


@pytest.fixture
def batches() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(2, 3, 32, 32, generator=g),
             "label": torch.randint(0, 19, (2, 32, 32), generator=g)} for _ in range(2)]
