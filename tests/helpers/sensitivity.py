"""Inputs of sensitivity scans: ratios, batches labelled by the model itself, an empty table for a model."""

from __future__ import annotations

import torch
from torch import nn

from torchslim.sensitivity.table import (
    SensitivityTable,
    model_fingerprint,
)

RATIOS = (0.25, 0.5, 0.75)


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
    """An empty table for ``model`` (l1_norm, top-1 on 64 samples); ``changes`` overrides its fields."""
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
