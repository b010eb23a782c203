"""Mixed precision, one switch for training and evaluation: `off`, `bf16` or `fp16` autocast, on CPU and CUDA.

The model never picks a precision itself; the engine enters `autocast` around forward passes (and, with
fp16, scales the loss with a GradScaler so small gradients do not underflow). YAML reads `off` as false:
false means off, true means bf16.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch

Amp = Literal["off", "bf16", "fp16"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_mode(value: bool | str) -> str:
    """The mode of a config value: false/"off" -> off, true -> bf16, else the name itself."""
    if isinstance(value, bool):
        return "bf16" if value else "off"
    return value


def autocast(device: torch.device, amp: bool | str):
    """Autocast to the mode's dtype on `device`; a no-op context for "off"."""
    mode = amp_mode(amp)
    if mode == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[mode])


def grad_scaler(device: torch.device, amp: bool | str) -> torch.amp.GradScaler:
    """A GradScaler for fp16 training (dynamic loss scale); disabled (a pass-through) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=amp_mode(amp) == "fp16")
