"""What the model registry holds: how to build one model, and namespaces of models built elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class WeightsConfig:
    """What a weights file says about the model it belongs to: build keyword arguments (e.g.
    ``num_classes`` from the classifier's shape) and the input size it was trained at."""

    kwargs: dict[str, Any]
    input_size: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """How to build one named model, and what the seed called its parameters."""

    name: str
    build: Callable[..., nn.Module]
    input_size: int = 224
    seed_names: Callable[[nn.Module], dict[str, str]] | None = None
    description: str = ""
    # Reads a weights file's own configuration (None: the file says nothing beyond its tensors).
    weights_config: Callable[[Path, dict[str, torch.Tensor]], WeightsConfig] | None = None


@dataclass(frozen=True)
class Namespace:
    """A zoo of models named ``<prefix><name>`` (``torchvision:resnet18``, ``timm:convnext_atto``):
    ``resolve`` turns a name (without the prefix) into a spec, ``names`` lists those matching a
    shell-style pattern (None: all)."""

    prefix: str
    resolve: Callable[[str], ModelSpec]
    names: Callable[[str | None], list[str]]
    description: str = ""
