"""Decode heads: linear, multi-level (UPerNet-style FPN fusion), Mask2Former-style mask classification."""

from fishertune.models.heads import linear, mask2former, multilevel  # noqa: F401  (registers the heads)
from fishertune.models.heads.base import (
    HEADS,
    DecodeHead,
    build_head,
    check_head_options,
    register_head,
    tiny_head_config,
)

__all__ = ["HEADS", "DecodeHead", "build_head", "check_head_options", "register_head", "tiny_head_config"]
