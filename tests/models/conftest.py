"""Tiny random models of every registered backbone family and head, for fast parametrised tests.

A test taking `backbone_name` runs once per registered backbone, one taking `head_name` once per head
(timm-style: one test body over the whole registry). Backbones needing timm skip, saying so, without it.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fishertune.models import BACKBONES, HEADS, build_segmentor, tiny_backbone_config, tiny_head_config

HAS_TIMM = importlib.util.find_spec("timm") is not None


def pytest_generate_tests(metafunc):
    if "backbone_name" in metafunc.fixturenames:
        marks = {"eva02": pytest.mark.skipif(not HAS_TIMM, reason="eva02 needs the timm extra "
                                                        "(bash scripts/test_eva02.sh)")}
        params = [pytest.param(n, marks=marks.get(n, ())) for n in sorted(BACKBONES)]
        metafunc.parametrize("backbone_name", params)
    if "head_name" in metafunc.fixturenames:
        metafunc.parametrize("head_name", sorted(HEADS))


def _tiny_segmentor(backbone: str, head: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_segmentor(dict(name=backbone, config=tiny_backbone_config(backbone)),
                           dict(name=head, **tiny_head_config(head)))


@pytest.fixture
def tiny_segmentor():
    """tiny_segmentor(backbone, head, seed=0) -> a random-initialised tiny Segmentor."""
    return _tiny_segmentor
