"""Inputs of sensitivity scans: batches labelled by the model itself, and an empty table for a model."""

from __future__ import annotations

import torch
from torch import nn

from torchslim.sensitivity.table import (
    SensitivityTable,
    model_fingerprint,
)


def batches_for(model: nn.Module, count: int = 64, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs labelled by the model itself plus noise, so that removing channels measurably costs accuracy."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, 8, 8, generator=generator)
    with torch.no_grad():
        labels = model(images).argmax(1)
    flip = torch.rand(count, generator=generator) < 0.1
    labels[flip] = 0
    return [(images[i : i + 16], labels[i : i + 16]) for i in range(0, count, 16)]


def fresh_table(model: nn.Module, **changes) -> SensitivityTable:
    values = {
        "model": "chain",
        "fingerprint": model_fingerprint(model),
        "criterion": "l1_norm",
        "metric": "top1_acc",
        "data": "random val[:64]",
        "samples": 64,
        **changes,
    }
    return SensitivityTable(**values)
