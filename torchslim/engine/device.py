"""Devices and model outputs, as the compressor and the CLI need them."""

from __future__ import annotations

import torch
from torch import nn

from torchslim.errors import ConfigError
from torchslim.nn import eval_mode


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def num_outputs(model: nn.Module, size: int, device: str | torch.device = "cpu") -> int | None:
    """The number of logits ``model`` gives one ``size``x``size`` image; None unless it returns (1, C)."""
    with eval_mode(model), torch.no_grad():
        output = model(torch.zeros(1, 3, size, size, device=device))
    return int(output.shape[1]) if isinstance(output, torch.Tensor) and output.dim() == 2 else None
