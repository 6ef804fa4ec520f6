"""Typed, validated compression configs: PaddleSlim 1.x YAML schema plus torchslim's additions.

>>> config = load_config("configs/mobilenet_v1.yaml")          # doctest: +SKIP
>>> config = apply_overrides(config, {"compressor.epoch": 3})  # doctest: +SKIP
>>> [s.class_name for s in config.active_strategies()]         # doctest: +SKIP
['UniformPruneStrategy']

Every problem raises :class:`torchslim.errors.ConfigError` with a one-line message
``<file>: <key.path>: <problem>``.
"""

from torchslim.config.loader import apply_overrides, load_config, loads_config, parse_config, parse_override
from torchslim.config.schema import (
    CONTROLLER_CLASSES,
    KNOWN_CRITERIA,
    LR_STRATEGIES,
    METRIC_ALIASES,
    PRUNER_CLASSES,
    STRATEGY_CLASSES,
    UNSUPPORTED_CLASSES,
    AutoPruneConfig,
    CompressorConfig,
    DistillationConfig,
    PruneStrategyConfig,
    SAControllerConfig,
    SensitivePruneConfig,
    SlimConfig,
    StrategyConfig,
    StructurePrunerConfig,
    TrainConfig,
    UniformPruneConfig,
    canonical_metric,
    config_keys,
)

__all__ = [
    "CONTROLLER_CLASSES",
    "KNOWN_CRITERIA",
    "LR_STRATEGIES",
    "METRIC_ALIASES",
    "PRUNER_CLASSES",
    "STRATEGY_CLASSES",
    "UNSUPPORTED_CLASSES",
    "AutoPruneConfig",
    "CompressorConfig",
    "DistillationConfig",
    "PruneStrategyConfig",
    "SAControllerConfig",
    "SensitivePruneConfig",
    "SlimConfig",
    "StrategyConfig",
    "StructurePrunerConfig",
    "TrainConfig",
    "UniformPruneConfig",
    "apply_overrides",
    "canonical_metric",
    "config_keys",
    "load_config",
    "loads_config",
    "parse_config",
    "parse_override",
]
