"""Reading and rewriting transformer-block hidden states from forward hooks.

A backbone block (`backbone.blocks[i]`) takes the hidden states [B, T, D] (prefix tokens
first) as its first positional argument and returns them either as a Tensor or as the first element of
a tuple; adapters hook `blocks` so they work on every backbone family without editing its code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fishertune.errors import FisherTuneError


def hidden_states(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def with_hidden_states(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def blocks_of(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(model.backbone, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise FisherTuneError(f"backbone {type(model.backbone).__name__} exposes no transformer `blocks`")
    return blocks


def block_module(block: nn.Module) -> nn.Module:
    """The module holding a block's layers: the block itself, or the layer a thin wrapper runs from outside
    the module tree (SAM's blocks fold tokens into a grid around `block.layer`)."""
    inner = getattr(block, "layer", None)
    if isinstance(inner, nn.Module) and next(block.parameters(), None) is None:
        return inner
    return block


def layer_module_names(model: nn.Module, layers: list, what: str = "layers") -> list[str]:
    """Module names for a list of layers: an int is a backbone block index (negative counts from the end),
    a string is a module name or glob, kept as given (globs are resolved by whoever hooks them)."""
    names = {id(m): n for n, m in model.named_modules()}
    blocks = blocks_of(model)
    out = []
    for layer in layers:
        if isinstance(layer, int):
            if not -len(blocks) <= layer < len(blocks):
                raise FisherTuneError(f"{what}: block {layer} does not exist (the backbone has {len(blocks)} "
                                      f"blocks)")
            out.append(names[id(blocks[layer])])
        else:
            out.append(str(layer))
    return out


def hook_block_outputs(blocks: nn.ModuleList,
                       change: Callable[[int, torch.Tensor], torch.Tensor]) -> list:
    """After block i, replace its hidden states h by `change(i, h)`; returns the hook handles."""
    def make(i: int):
        def hook(module, args, output):
            return with_hidden_states(output, change(i, hidden_states(output)))
        return hook
    return [block.register_forward_hook(make(i)) for i, block in enumerate(blocks)]


def hook_block_inputs(blocks: nn.ModuleList,
                      change: Callable[[int, torch.Tensor], torch.Tensor]) -> list:
    """Before block i, replace its first positional argument h by `change(i, h)`."""
    def make(i: int):
        def hook(module, args):
            if not args:
                raise FisherTuneError("this tuner needs blocks called with the hidden states as first "
                                      "positional argument")
            return (change(i, args[0]), *args[1:])
        return hook
    return [block.register_forward_pre_hook(make(i)) for i, block in enumerate(blocks)]
