"""Compression strategies; each module registers the strategy class it implements."""

from .auto import AutoPruneStrategy
from .base import STRATEGIES, CompressionContext, Strategy, build_strategy
from .distill import DistillationStrategy
from .sensitive import SensitivePruneStrategy
from .uniform import UniformPruneStrategy

__all__ = [
    "STRATEGIES",
    "AutoPruneStrategy",
    "CompressionContext",
    "DistillationStrategy",
    "SensitivePruneStrategy",
    "Strategy",
    "UniformPruneStrategy",
    "build_strategy",
]
