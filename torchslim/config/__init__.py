"""Typed, validated compression configs: PaddleSlim 1.x YAML schema plus torchslim's additions.

>>> config = load_config("configs/mobilenet_v1.yaml")          # doctest: +SKIP
>>> config = apply_overrides(config, {"compressor.epoch": 3})  # doctest: +SKIP
>>> [s.class_name for s in config.active_strategies()]         # doctest: +SKIP
['UniformPruneStrategy']

Every problem raises :class:`torchslim.errors.ConfigError` with a one-line message
``<file>: <key.path>: <problem>``.
"""

from torchslim.config.classes import (
    CONTROLLER_CONFIGS,
    METRIC_ALIASES,
    PRUNER_CONFIGS,
    STRATEGY_CONFIGS,
    UNSUPPORTED_CLASSES,
    AutoPruneConfig,
    DistillationConfig,
    PruneStrategyConfig,
    SAControllerConfig,
    SensitivePruneConfig,
    StrategyConfig,
    StructurePrunerConfig,
    UniformPruneConfig,
    canonical_metric,
)
from torchslim.config.distillers import DISTILLER_CONFIGS, SoftLabelDistillerConfig
from torchslim.config.loader import apply_overrides, load_config, loads_config, parse_config, parse_override
from torchslim.config.quantizers import (
    QUANTIZER_CONFIGS,
    MKLDNNPostTrainingQuantConfig,
    PostTrainingQuantConfig,
    PostTrainingQuantizerConfig,
    QuantizationConfig,
    quantizer_config,
)
from torchslim.config.schema import LR_STRATEGIES, CompressorConfig, SlimConfig, TrainConfig

__all__ = [
    "CONTROLLER_CONFIGS",
    "DISTILLER_CONFIGS",
    "LR_STRATEGIES",
    "METRIC_ALIASES",
    "PRUNER_CONFIGS",
    "QUANTIZER_CONFIGS",
    "STRATEGY_CONFIGS",
    "UNSUPPORTED_CLASSES",
    "AutoPruneConfig",
    "CompressorConfig",
    "DistillationConfig",
    "MKLDNNPostTrainingQuantConfig",
    "PostTrainingQuantConfig",
    "PostTrainingQuantizerConfig",
    "QuantizationConfig",
    "PruneStrategyConfig",
    "SAControllerConfig",
    "SensitivePruneConfig",
    "SlimConfig",
    "SoftLabelDistillerConfig",
    "StrategyConfig",
    "StructurePrunerConfig",
    "TrainConfig",
    "UniformPruneConfig",
    "apply_overrides",
    "canonical_metric",
    "load_config",
    "loads_config",
    "parse_config",
    "parse_override",
    "quantizer_config",
]
