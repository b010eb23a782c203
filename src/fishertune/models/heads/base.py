"""The decode-head interface and registry: features from the backbone in, class scores and a loss out."""

from __future__ import annotations

import inspect
import math
import types
import typing
from typing import Any, ClassVar

import torch
from torch import nn

from fishertune.errors import InputError
from fishertune.label_space import NUM_CLASSES
from fishertune.models.losses import pixel_cross_entropy
from fishertune.registry import Registry
from fishertune.validation import check_type, suggest

HEADS: Registry[type[DecodeHead]] = Registry("head")
register_head = HEADS.register
"""Class decorator: makes a head buildable by its `name`."""


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups: batch-independent, so per-sample losses (the Fisher) stay so."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class DecodeHead(nn.Module):
    """`forward(features) -> output`, `logits(output) -> [B, C, h, w]`, `loss(output, labels, reduction)`.

    Pixel heads output logits directly and train with pixel cross-entropy; subclasses may output richer
    structures (Mask2Former: class and mask logits per query).
    """

    name: ClassVar[str] = ""
    tiny_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, in_channels: int, num_levels: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.in_channels = in_channels
        self.num_levels = num_levels
        self.num_classes = num_classes

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Refuse (InputError naming model.head_options.<key>) options that fit their types and ranges but
        not each other; called before any model is built."""

    def logits(self, output: Any) -> torch.Tensor:
        return output

    def loss(self, output: Any, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return pixel_cross_entropy(self.logits(output), labels, reduction)


def tiny_head_config(name: str) -> dict[str, Any]:
    """Options that make a registered head tiny (few channels / queries / layers) for fast tests."""
    return dict(HEADS.lookup(name).tiny_config)


SET_BY_THE_RUN = {"in_channels": "the backbone's width", "num_levels": "model.out_indices",
                  "num_classes": "data.classes (19 Cityscapes classes by default)"}
"""Arguments of every head that the run sets, never `model.head_options`: where each comes from."""


def check_head_options(name: str, options: dict[str, Any]) -> None:
    """Refuse, in one line naming `model.head_options.<key>` and before any model is built, an option the
    run sets itself (num_classes, in_channels, num_levels), an unknown one, a value of the wrong type (per
    the head's signature), a size below 1, a negative weight, a dropout outside [0, 1), and what the head's
    own `check_options` refuses (Mask2Former: hidden_dim divisible by num_heads)."""
    head_class = HEADS.lookup(name)
    hints = typing.get_type_hints(head_class.__init__)
    valid = [p for p in inspect.signature(head_class.__init__).parameters
             if p != "self" and p not in SET_BY_THE_RUN]
    for key, value in options.items():
        where = f"model.head_options.{key}"
        if key in SET_BY_THE_RUN:
            raise InputError(f"{where} cannot be set: the run sets it from {SET_BY_THE_RUN[key]}")
        if key not in valid:
            raise InputError(f"unknown option {where} for head {name!r}"
                             f"{suggest(key, valid, 'model.head_options')}")
        hint = hints.get(key)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) \
            and type(None) in typing.get_args(hint)
        if value is None and optional:
            continue
        if optional:
            (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is tuple:  # tuple[float, ...]: a YAML list
            hint = list[typing.get_args(hint)[0]]
        checked = check_type(list(value) if isinstance(value, tuple) else value, hint, where)
        numbers = checked if isinstance(checked, list) else [checked]
        for number in numbers:
            if isinstance(number, bool) or not isinstance(number, int | float):
                continue
            if isinstance(number, int) and hint is int and number < 1:
                raise InputError(f"{where} must be a whole number >= 1, got {value!r}")
            if number < 0 or (key == "dropout" and number >= 1):
                expected = "in [0, 1)" if key == "dropout" else ">= 0"
                raise InputError(f"{where} must be {expected}, got {value!r}")
    head_class.check_options(options)


def build_head(name: str, in_channels: int, num_levels: int, num_classes: int = NUM_CLASSES,
               **kw: Any) -> DecodeHead:
    """Build a registered head ("linear", "multilevel", "mask2former"); `kw` are the head's own options
    (checked by `check_head_options`)."""
    check_head_options(name, kw)
    return HEADS.lookup(name)(in_channels, num_levels, num_classes, **kw)
