"""LoRA (Hu et al., ICLR 2022) through the `peft` library on the backbone's linear projections.

W x + (alpha/rank) · B A x with A: rank×in, B: out×rank; peft initialises B to zero, so the tuned
backbone equals the base one until the first update. Targets are found per block, whatever the backbone
family names them: linear layers under the block's attention module ("attn"/"attention" in the path:
q/k/v and output projections) and, with `target_mlp`, every other linear layer of the block (the MLP).
Only the adapter matrices are saved (peft's adapter state dict, in safetensors).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import peft
import torch
from torch import nn

from fishertune.errors import FisherTuneError
from fishertune.tuners.base import Tuner, TunerConfig, register_tuner, require, seeded
from fishertune.tuners.blocks import block_module, blocks_of

ADAPTER = "default"


@dataclass
class LoraConfig(TunerConfig):
    """LoRA's options (defaults: rank 8, alpha 16, attention projections only)."""

    rank: int = field(default=8, metadata={"help": "rank r of the update B·A"})
    alpha: float = field(default=16.0, metadata={"help": "scaling numerator: the update is (alpha/r)·B·A"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch input"})
    target_mlp: bool = field(default=False, metadata={
        "help": "also adapt the MLP projections (default: attention q/k/v/output only)"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation of A"})

    def __post_init__(self):
        require(isinstance(self.rank, int) and self.rank >= 1, f"rank must be a positive integer, "
                f"got {self.rank!r}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


def target_linears(model: nn.Module, target_mlp: bool) -> dict[str, nn.Linear]:
    """The linear layers LoRA adapts, by name relative to `model.backbone.model` (the HF model)."""
    hf = model.backbone.model
    in_blocks = {id(m) for block in blocks_of(model) for m in block_module(block).modules()}
    targets = {}
    for name, module in hf.named_modules():
        if not isinstance(module, nn.Linear) or id(module) not in in_blocks:
            continue
        is_attention = any(part.endswith("attn") or "attention" in part for part in name.split("."))
        if is_attention or target_mlp:
            targets[name] = module
    if not targets:
        raise FisherTuneError(f"LoRA found no linear projections in {type(hf).__name__}'s blocks")
    return targets


@register_tuner
class LoraTuner(Tuner):
    """Trains low-rank updates B·A of the attention projections (and, with `target_mlp`, the MLP) through
    peft; LoRA, Hu et al., ICLR 2022. Defaults: rank 8, alpha 16, no dropout."""

    name = "lora"
    size_knob = ("rank", 1)
    paper = "LoRA (Hu et al., ICLR 2022), via peft"
    config_class = LoraConfig

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        c = self.config
        targets = sorted(target_linears(model, c.target_mlp))
        self.peft_config = peft.LoraConfig(r=c.rank, lora_alpha=c.alpha, lora_dropout=c.dropout,
                                           target_modules=targets, init_lora_weights=True)
        with seeded(c.seed):
            peft.inject_adapter_in_model(self.peft_config, model.backbone.model, adapter_name=ADAPTER)

    @classmethod
    def count_trainable(cls, model: nn.Module, config: LoraConfig) -> int:
        """r·(in + out) per adapted linear layer."""
        return sum(config.rank * (m.in_features + m.out_features)
                   for m in target_linears(model, config.target_mlp).values())

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters()
                if n.startswith("backbone.") and ".lora_" in n]

    def saved_tensors(self) -> dict[str, torch.Tensor]:
        return peft.get_peft_model_state_dict(self.backbone.model, adapter_name=ADAPTER)

    def load_saved_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        try:
            result = peft.set_peft_model_state_dict(self.backbone.model, tensors, adapter_name=ADAPTER)
        except RuntimeError as err:  # shape mismatch: adapters saved on a backbone of another size
            raise FisherTuneError(f"saved LoRA weights do not fit this model: "
                                  f"{str(err).strip().splitlines()[-1].strip()}") from None
        missing = [k for k in result.missing_keys if ".lora_" in k]
        if result.unexpected_keys or missing:
            bad = (result.unexpected_keys or missing)[0]
            raise FisherTuneError(f"saved LoRA weights do not fit this model: {bad!r}")
