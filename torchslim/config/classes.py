"""The config sections whose entries name a class: pruners, controllers and strategies.

Every config dataclass is registered once, under its YAML ``class`` name, in its section's
registry; the loader, the error messages and the compressor's implementations read those.
Criterion names come from :data:`torchslim.criteria.CRITERIA`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from torchslim.config.messages import Context, KeyPath, did_you_mean, short_repr
from torchslim.config.validation import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE_INT,
    RATIO_OPEN,
    as_float,
    as_int,
    as_path_or_none,
    as_regex,
    as_str,
    choice,
    each,
    interval,
    list_of,
    mapping_of,
    non_empty,
    optional,
    spec,
)
from torchslim.criteria import CRITERIA, DEFAULT_CRITERION
from torchslim.registry import Registry


def _as_ranking(ctx: Context, path: KeyPath, value: Any) -> bool | str:
    """``global_ranking``: true, false or ``per_mac``."""
    if isinstance(value, bool) or value == "per_mac":
        return value
    raise ctx.error(path, f"expected true, false or per_mac, got {short_repr(value)}")


PRUNER_CONFIGS: Registry[type] = Registry("pruner class")
CONTROLLER_CONFIGS: Registry[type] = Registry("controller class")
STRATEGY_CONFIGS: Registry[type[StrategyConfig]] = Registry("strategy class")

UNSUPPORTED_CLASSES: dict[str, str] = {
    "LightNASStrategy": "neural architecture search is not supported by torchslim",
    "LightNASController": "neural architecture search is not supported by torchslim",
}
"""PaddleSlim 1.x classes recognised but deliberately not implemented."""

METRIC_ALIASES: dict[str, str] = {
    "top1_acc": "top1_acc",
    "acc_top1": "top1_acc",
    "top5_acc": "top5_acc",
    "acc_top5": "top5_acc",
}
"""Accepted ``metric_name`` spellings -> canonical name (the seed used both orders)."""

SUPPORTED_AXES = (0,)


def yaml_class(registry: Registry[type], name: str):
    """Class decorator: register a config dataclass under its YAML ``class`` name (its ``class_name``)."""

    def register(cls: type) -> type:
        cls.class_name = name
        return registry.register(name, cls)

    return register


def class_names(registry: Registry[type]) -> list[str]:
    """The YAML spellings of the classes in a registry."""
    return [registry.get(name).class_name for name in registry]


def canonical_metric(name: str) -> str:
    """``'acc_top1'`` -> ``'top1_acc'``; unknown names are returned unchanged."""
    return METRIC_ALIASES.get(name, name)


# ----------------------------------------------------------------------------- converters


def _pattern_key(ctx: Context, path: KeyPath, key: Any) -> str:
    """Keys of ``pruning_axis``/``criterions``: ``'*'`` or a regex over parameter names."""
    if key == "*":
        return key
    return as_regex(ctx, path, key)


def _axis(ctx: Context, path: KeyPath, value: Any) -> int:
    axis = as_int(ctx, path, value)
    if axis not in SUPPORTED_AXES:
        raise ctx.error(path, f"only axis 0 (output channels / filters) is supported, got {axis}")
    return axis


def _criterion(ctx: Context, path: KeyPath, value: Any) -> str:
    name = as_str(ctx, path, value)
    if name not in CRITERIA:
        known = CRITERIA.list()
        close = did_you_mean(name, [*known, *CRITERIA.aliases()])
        raise ctx.error(path, f"unknown criterion {short_repr(name)}{close} (known: {', '.join(known)})")
    return name


def _metric(ctx: Context, path: KeyPath, value: Any) -> str:
    name = as_str(ctx, path, value)
    if name not in METRIC_ALIASES:
        known = sorted(METRIC_ALIASES)
        raise ctx.error(
            path, f"unknown metric {short_repr(name)}{did_you_mean(name, known)} (known: {', '.join(known)})"
        )
    return name


# ----------------------------------------------------------------------------- pruners and controllers


@yaml_class(PRUNER_CONFIGS, "StructurePruner")
@dataclass(kw_only=True)
class StructurePrunerConfig:
    """``class: StructurePruner`` - ranks and removes whole filters (output channels)."""

    class_name: ClassVar[str]

    name: str = ""
    pruning_axis: dict[str, int] = spec(
        mapping_of(_pattern_key, _axis),
        factory=lambda: {"*": 0},
        check=non_empty("pattern"),
        doc="parameter pattern ('*' = all, else a regex) -> axis; only 0 is supported",
    )
    criterions: dict[str, str] = spec(
        mapping_of(_pattern_key, _criterion),
        factory=lambda: {"*": DEFAULT_CRITERION},
        check=non_empty("pattern"),
        doc="parameter pattern ('*' = all, else a regex) -> criterion name",
    )
    round_to: int = spec(as_int, 16, check=POSITIVE_INT, doc="kept channel counts are multiples of this")
    global_ranking: bool | str = spec(
        _as_ranking,
        False,
        doc="rank filters across layers instead of per layer; per_mac: by score per MAC saved (balances "
        "attention heads, MLP and embedding widths)",
    )
    align: str = spec(
        choice(("round_to", "latency"), "align"),
        "round_to",
        doc="round_to: every count a multiple of round_to; latency: per-layer alignment and "
        "allocation from a latency table measured on `runtime`",
    )
    runtime: str = spec(
        choice(("onnxruntime", "eager"), "runtime"),
        "onnxruntime",
        doc="runtime whose latency align=latency measures",
    )
    latency_speed_slack: float = spec(
        as_float,
        0.02,
        check=NON_NEGATIVE,
        doc="align=latency with validation data: among plans within this fraction of the fastest, "
        "the best top-1 after BN re-estimation wins; 0: the fastest",
    )

    def criterion_for(self, param_name: str) -> str | None:
        """The criterion for a parameter: exact key, then the first regex key that
        fully matches, then ``'*'``; None when nothing applies."""
        return _lookup(self.criterions, param_name)

    def axis_for(self, param_name: str) -> int | None:
        return _lookup(self.pruning_axis, param_name)


def _lookup(table: dict[str, Any], param_name: str) -> Any:
    if param_name in table:
        return table[param_name]
    for pattern, value in table.items():
        if pattern != "*" and re.fullmatch(pattern, param_name):
            return value
    return table.get("*")


@yaml_class(CONTROLLER_CONFIGS, "SAController")
@dataclass(kw_only=True)
class SAControllerConfig:
    """``class: SAController`` - simulated annealing over per-layer ratio tokens."""

    class_name: ClassVar[str]

    name: str = ""
    reduce_rate: float = spec(as_float, 0.9, check=RATIO_OPEN, doc="temperature multiplier per iteration")
    init_temperature: float = spec(as_float, 100.0, check=interval(0, lo_open=True))
    max_iter_number: int = spec(as_int, 300, check=POSITIVE_INT)


# ----------------------------------------------------------------------------- strategies


@dataclass(kw_only=True)
class StrategyConfig:
    """Base of all strategies: instance name and the epoch window."""

    class_name: ClassVar[str] = ""
    references: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(field, section) pairs: the field names instances of that section."""

    name: str = ""
    start_epoch: int = spec(as_int, 0, check=NON_NEGATIVE)
    end_epoch: int | None = spec(optional(as_int), None, check=NON_NEGATIVE)

    def validate(self, ctx: Context, path: KeyPath) -> None:
        if self.end_epoch is not None and self.end_epoch < self.start_epoch:
            raise ctx.error(
                (*path, "end_epoch"), f"must be >= start_epoch ({self.start_epoch}), got {self.end_epoch}"
            )


@dataclass(kw_only=True)
class PruneStrategyConfig(StrategyConfig):
    """Base of the pruning strategies: the pruner they use and the parameters they prune."""

    references: ClassVar[tuple[tuple[str, str], ...]] = (("pruner", "pruners"),)

    pruner: str = spec(as_str)
    pruned_params: str = spec(as_regex, doc="regex over parameter names")

    @property
    def pruned_params_re(self) -> re.Pattern:
        """``pruned_params`` compiled (matching semantics are the pruner's business)."""
        return re.compile(self.pruned_params)


@yaml_class(STRATEGY_CONFIGS, "UniformPruneStrategy")
@dataclass(kw_only=True)
class UniformPruneConfig(PruneStrategyConfig):
    """``class: UniformPruneStrategy`` - one ratio for all matched params, bisected to the FLOPs target."""

    target_ratio: float = spec(as_float, check=RATIO_OPEN, doc="fraction of FLOPs to remove")
    metric_name: str | None = spec(optional(_metric), None)
    latency_target: float | None = spec(
        optional(as_float),
        None,
        check=RATIO_OPEN,
        doc="also remove at least this fraction of the latency on the pruner's runtime (align: latency)",
    )


@yaml_class(STRATEGY_CONFIGS, "SensitivePruneStrategy")
@dataclass(kw_only=True)
class SensitivePruneConfig(PruneStrategyConfig):
    """``class: SensitivePruneStrategy`` - per-layer ratios from a sensitivity scan."""

    delta_rate: float = spec(as_float, 0.2, check=RATIO_OPEN, doc="step between scanned ratios")
    target_ratio: float = spec(as_float, 0.5, check=RATIO_OPEN, doc="fraction of FLOPs to remove")
    metric_name: str = spec(_metric, "top1_acc")
    sensitivities_file: str | None = spec(as_path_or_none, None, doc="null: inside the run directory")
    num_steps: int = spec(as_int, 1, check=POSITIVE_INT)
    eval_rate: float | None = spec(optional(as_float), None, check=FRACTION, doc="fraction of the eval set")
    allocation: str = spec(
        choice(("marginal", "level"), "allocation"),
        "marginal",
        doc="'marginal': least total predicted loss per MAC removed; "
        "'level': the seed's one allowed-loss level for every layer",
    )


@yaml_class(STRATEGY_CONFIGS, "AutoPruneStrategy")
@dataclass(kw_only=True)
class AutoPruneConfig(PruneStrategyConfig):
    """``class: AutoPruneStrategy`` - search per-layer ratios with a controller."""

    references: ClassVar[tuple[tuple[str, str], ...]] = (("pruner", "pruners"), ("controller", "controllers"))

    controller: str = spec(as_str)
    min_ratio: float = spec(as_float, 0.5, check=RATIO_OPEN, doc="least fraction of FLOPs removed")
    max_ratio: float = spec(as_float, 0.7, check=RATIO_OPEN, doc="most fraction of FLOPs removed")
    metric_name: str = spec(_metric, "top1_acc")
    retrain_epoch: int = spec(as_int, 0, check=NON_NEGATIVE)
    uniform_range: float | None = spec(optional(as_float), None, check=FRACTION)
    init_tokens: list[int] | None = spec(optional(list_of(as_int)), None, check=each(NON_NEGATIVE))
    eval_rate: float | None = spec(
        optional(as_float), None, check=FRACTION, doc="fraction of the eval set each candidate is scored on"
    )

    def validate(self, ctx: Context, path: KeyPath) -> None:
        super().validate(ctx, path)
        if self.min_ratio > self.max_ratio:
            raise ctx.error(
                (*path, "min_ratio"), f"must be <= max_ratio ({self.max_ratio:g}), got {self.min_ratio:g}"
            )


@yaml_class(STRATEGY_CONFIGS, "DistillationStrategy")
@dataclass(kw_only=True)
class DistillationConfig(StrategyConfig):
    """``class: DistillationStrategy`` - names its distiller (one); epochs [start_epoch, end_epoch).

    The ``distillers`` entries stay raw here; :mod:`torchslim.config.distillers` validates them."""

    references: ClassVar[tuple[tuple[str, str], ...]] = (
        ("distiller", "distillers"),
        ("distillers", "distillers"),
    )

    distiller: str | None = spec(optional(as_str), None)
    distillers: list[str] | None = spec(optional(list_of(as_str, allow_scalar=True)), None)

    def validate(self, ctx: Context, path: KeyPath) -> None:
        super().validate(ctx, path)
        if self.distiller is None and not self.distillers:
            raise ctx.error((*path, "distiller"), "required key is missing (or give 'distillers')")
