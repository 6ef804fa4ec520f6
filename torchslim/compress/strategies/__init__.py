"""Compression strategies; each module registers the strategy class it implements."""

from .auto import AutoPruneStrategy
from .base import STRATEGIES, CompressionContext, Strategy, build_strategy
from .distill import DistillationStrategy
from .post_training_quant import MKLDNNPostTrainingQuantStrategy, PostTrainingQuantStrategy
from .quantization import QuantizationStrategy
from .sensitive import SensitivePruneStrategy
from .uniform import UniformPruneStrategy

__all__ = [
    "STRATEGIES",
    "AutoPruneStrategy",
    "CompressionContext",
    "DistillationStrategy",
    "MKLDNNPostTrainingQuantStrategy",
    "PostTrainingQuantStrategy",
    "QuantizationStrategy",
    "SensitivePruneStrategy",
    "Strategy",
    "UniformPruneStrategy",
    "build_strategy",
]
