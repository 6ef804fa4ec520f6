"""Compression strategies, built from their config by class name."""

from __future__ import annotations

from typing import Any

from torchslim.errors import ConfigError

from .auto import AutoPruneStrategy
from .base import CompressionContext, Strategy
from .distill import DistillationStrategy
from .sensitive import SensitivePruneStrategy
from .uniform import UniformPruneStrategy

NOT_YET: dict[str, str] = {}


def build_strategy(name: str, config: Any, slim_config: Any) -> Strategy:
    """The strategy object for config entry ``strategies.<name>``."""
    class_name = type(config).class_name
    if class_name == "UniformPruneStrategy":
        return UniformPruneStrategy(name, config, slim_config)
    if class_name == "DistillationStrategy":
        return DistillationStrategy(name, config, slim_config)
    if class_name == "SensitivePruneStrategy":
        return SensitivePruneStrategy(name, config, slim_config)
    if class_name == "AutoPruneStrategy":
        return AutoPruneStrategy(name, config, slim_config)
    if class_name in NOT_YET:
        raise ConfigError(
            f"{slim_config.source}: strategies.{name}: {class_name} ({NOT_YET[class_name]}) is not yet supported"
        )
    raise ConfigError(f"{slim_config.source}: strategies.{name}: unknown strategy class {class_name}")


__all__ = [
    "AutoPruneStrategy",
    "CompressionContext",
    "DistillationStrategy",
    "SensitivePruneStrategy",
    "Strategy",
    "UniformPruneStrategy",
    "build_strategy",
]
