"""Fixtures of the tuner tests; models, batches and the loss live in tuner_helpers.py."""

import pytest
from tuner_helpers import make_batches


@pytest.fixture
def batches() -> list[dict]:
    return make_batches()
