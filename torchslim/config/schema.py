"""The config schema as dataclasses: PaddleSlim 1.x keys plus torchslim's additions.

Each dataclass field that is a YAML key carries its converter and check in the field
metadata (see :func:`torchslim.config._common.spec`); the YAML ``class`` key is the
class attribute ``class_name``; a section entry's instance name is the ``name`` field.
The YAML-class -> dataclass tables (``PRUNER_CLASSES``, ``CONTROLLER_CLASSES``,
``STRATEGY_CLASSES``) and ``KNOWN_CRITERIA`` / ``METRIC_ALIASES`` may be extended.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from torchslim.config.validation import (
    Context,
    KeyPath,
    as_bool,
    as_float,
    as_int,
    as_path_or_none,
    as_regex,
    as_str,
    choice,
    did_you_mean,
    each,
    interval,
    list_of,
    mapping_of,
    optional,
    plain,
    short_repr,
    spec,
    to_plain,
)

KNOWN_CRITERIA: set[str] = {
    "l1_norm",
    "l2_norm",
    "fpgm",
    "geometry_median",
    "bn_scale",
    "taylor",
    "activation_mean",
}
"""Filter-ranking criterion names a pruner may use (compared case-insensitively).
The criteria package adds the names it registers."""

METRIC_ALIASES: dict[str, str] = {
    "top1_acc": "top1_acc",
    "acc_top1": "top1_acc",
    "top5_acc": "top5_acc",
    "acc_top5": "top5_acc",
}
"""Accepted ``metric_name`` spellings -> canonical name (the seed used both orders)."""

LR_STRATEGIES = ("piecewise_decay", "cosine_decay")
SUPPORTED_AXES = (0,)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def canonical_metric(name: str) -> str:
    """``'acc_top1'`` -> ``'top1_acc'``; unknown names are returned unchanged."""
    return METRIC_ALIASES.get(name, name)


# ----------------------------------------------------------------------------- small converters


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
    if name.lower() not in KNOWN_CRITERIA:
        known = sorted(KNOWN_CRITERIA)
        raise ctx.error(
            path,
            f"unknown criterion {short_repr(name)}{did_you_mean(name, known)} (known: {', '.join(known)})",
        )
    return name


def _metric(ctx: Context, path: KeyPath, value: Any) -> str:
    name = as_str(ctx, path, value)
    if name not in METRIC_ALIASES:
        known = sorted(METRIC_ALIASES)
        raise ctx.error(
            path, f"unknown metric {short_repr(name)}{did_you_mean(name, known)} (known: {', '.join(known)})"
        )
    return name


def _device(ctx: Context, path: KeyPath, value: Any) -> str:
    text = as_str(ctx, path, value)
    if not _DEVICE.fullmatch(text):
        raise ctx.error(path, f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {short_repr(text)}")
    return text


def _non_empty(what: str):
    def check(value: Any) -> str | None:
        return f"must name at least one {what}" if not value else None

    return check


_RATIO_OPEN = interval(0.0, 1.0, lo_open=True, hi_open=True)
_FRACTION = interval(0.0, 1.0, lo_open=True)
_NON_NEGATIVE = interval(0)
_POSITIVE_INT = interval(1)


def _check_epochs(obj: Any, ctx: Context, path: KeyPath) -> None:
    end = getattr(obj, "end_epoch", None)
    if end is not None and end < obj.start_epoch:
        raise ctx.error((*path, "end_epoch"), f"must be >= start_epoch ({obj.start_epoch}), got {end}")


# ----------------------------------------------------------------------------- pruners


@dataclass(kw_only=True)
class StructurePrunerConfig:
    """``class: StructurePruner`` - ranks and removes whole filters (output channels)."""

    class_name: ClassVar[str] = "StructurePruner"

    name: str = ""
    pruning_axis: dict[str, int] = spec(
        mapping_of(_pattern_key, _axis),
        factory=lambda: {"*": 0},
        check=_non_empty("pattern"),
        doc="parameter pattern ('*' = all, else a regex) -> axis; only 0 is supported",
    )
    criterions: dict[str, str] = spec(
        mapping_of(_pattern_key, _criterion),
        factory=lambda: {"*": "l1_norm"},
        check=_non_empty("pattern"),
        doc="parameter pattern ('*' = all, else a regex) -> criterion name",
    )
    round_to: int = spec(
        as_int,
        16,
        check=_POSITIVE_INT,
        doc="kept channel counts are multiples of this (torchslim.pruning.DEFAULT_ROUND_TO)",
    )
    global_ranking: bool = spec(as_bool, False, doc="rank filters across layers instead of per layer")
    align: str = spec(
        choice(("round_to", "latency"), "align"),
        "round_to",
        doc="round_to: every count a multiple of round_to; latency: per-layer alignment and channel "
        "allocation from a latency table measured on `runtime` (torchslim.latency.planner)",
    )
    runtime: str = spec(
        choice(("onnxruntime", "eager"), "runtime"),
        "onnxruntime",
        doc="runtime whose latency align=latency measures",
    )
    latency_speed_slack: float = spec(
        as_float,
        0.02,
        check=_NON_NEGATIVE,
        doc="align=latency in a run with validation data: among the measured plans within this fraction of the "
        "fastest, the best top-1 after BN re-estimation (on up to 1000 validation images) wins; 0: the fastest",
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


# ----------------------------------------------------------------------------- controllers


@dataclass(kw_only=True)
class SAControllerConfig:
    """``class: SAController`` - simulated annealing over per-layer ratio tokens."""

    class_name: ClassVar[str] = "SAController"

    name: str = ""
    reduce_rate: float = spec(as_float, 0.9, check=_RATIO_OPEN, doc="temperature multiplier per iteration")
    init_temperature: float = spec(as_float, 100.0, check=interval(0, lo_open=True))
    max_iter_number: int = spec(as_int, 300, check=_POSITIVE_INT)


# ----------------------------------------------------------------------------- strategies


@dataclass(kw_only=True)
class StrategyConfig:
    """Base of all strategies: instance name and the epoch window."""

    class_name: ClassVar[str] = ""
    references: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(field, section) pairs: the field names instances of that section."""

    name: str = ""

    def validate(self, ctx: Context, path: KeyPath) -> None:
        _check_epochs(self, ctx, path)


@dataclass(kw_only=True)
class PruneStrategyConfig(StrategyConfig):
    """Base of the pruning strategies (they all have ``pruner`` and ``pruned_params``)."""

    @property
    def pruned_params_re(self) -> re.Pattern:
        """``pruned_params`` compiled (matching semantics are the pruner's business)."""
        return re.compile(self.pruned_params)


@dataclass(kw_only=True)
class UniformPruneConfig(PruneStrategyConfig):
    """``class: UniformPruneStrategy`` - one ratio for all matched params, bisected to the FLOPs target."""

    class_name: ClassVar[str] = "UniformPruneStrategy"
    references: ClassVar[tuple[tuple[str, str], ...]] = (("pruner", "pruners"),)

    pruner: str = spec(as_str)
    start_epoch: int = spec(as_int, 0, check=_NON_NEGATIVE)
    end_epoch: int | None = spec(optional(as_int), None, check=_NON_NEGATIVE)
    target_ratio: float = spec(as_float, check=_RATIO_OPEN, doc="fraction of FLOPs to remove")
    pruned_params: str = spec(as_regex, doc="regex over parameter names")
    metric_name: str | None = spec(optional(_metric), None)
    latency_target: float | None = spec(
        optional(as_float),
        None,
        check=_RATIO_OPEN,
        doc="also remove at least this fraction of the latency estimated on the pruner's runtime (align: latency)",
    )


@dataclass(kw_only=True)
class SensitivePruneConfig(PruneStrategyConfig):
    """``class: SensitivePruneStrategy`` - per-layer ratios from a sensitivity scan."""

    class_name: ClassVar[str] = "SensitivePruneStrategy"
    references: ClassVar[tuple[tuple[str, str], ...]] = (("pruner", "pruners"),)

    pruner: str = spec(as_str)
    start_epoch: int = spec(as_int, 0, check=_NON_NEGATIVE)
    end_epoch: int | None = spec(optional(as_int), None, check=_NON_NEGATIVE)
    delta_rate: float = spec(as_float, 0.2, check=_RATIO_OPEN, doc="step between scanned ratios")
    target_ratio: float = spec(as_float, 0.5, check=_RATIO_OPEN, doc="fraction of FLOPs to remove")
    metric_name: str = spec(_metric, "top1_acc")
    pruned_params: str = spec(as_regex, doc="regex over parameter names")
    sensitivities_file: str | None = spec(as_path_or_none, None, doc="null: inside the run directory")
    num_steps: int = spec(as_int, 1, check=_POSITIVE_INT)
    eval_rate: float | None = spec(
        optional(as_float), None, check=_FRACTION, doc="fraction of the eval set; null: all"
    )
    allocation: str = spec(
        choice(("marginal", "level"), "allocation"),
        "marginal",
        doc="ratios from the table: 'marginal' = least total predicted loss per MAC removed; "
        "'level' = the seed's one allowed-loss level for every layer",
    )


@dataclass(kw_only=True)
class AutoPruneConfig(PruneStrategyConfig):
    """``class: AutoPruneStrategy`` - search per-layer ratios with a controller."""

    class_name: ClassVar[str] = "AutoPruneStrategy"
    references: ClassVar[tuple[tuple[str, str], ...]] = (("pruner", "pruners"), ("controller", "controllers"))

    pruner: str = spec(as_str)
    controller: str = spec(as_str)
    start_epoch: int = spec(as_int, 0, check=_NON_NEGATIVE)
    end_epoch: int | None = spec(optional(as_int), None, check=_NON_NEGATIVE)
    min_ratio: float = spec(as_float, 0.5, check=_RATIO_OPEN, doc="least fraction of FLOPs removed")
    max_ratio: float = spec(as_float, 0.7, check=_RATIO_OPEN, doc="most fraction of FLOPs removed")
    metric_name: str = spec(_metric, "top1_acc")
    pruned_params: str = spec(as_regex, doc="regex over parameter names")
    retrain_epoch: int = spec(as_int, 0, check=_NON_NEGATIVE)
    uniform_range: float | None = spec(optional(as_float), None, check=_FRACTION)
    init_tokens: list[int] | None = spec(optional(list_of(as_int)), None, check=each(_NON_NEGATIVE))
    eval_rate: float | None = spec(
        optional(as_float),
        None,
        check=_FRACTION,
        doc="fraction of the eval set each candidate is scored on; null: all",
    )

    def validate(self, ctx: Context, path: KeyPath) -> None:
        super().validate(ctx, path)
        if self.min_ratio > self.max_ratio:
            raise ctx.error(
                (*path, "min_ratio"), f"must be <= max_ratio ({self.max_ratio:g}), got {self.min_ratio:g}"
            )


@dataclass(kw_only=True)
class DistillationConfig(StrategyConfig):
    """``class: DistillationStrategy`` - names its distiller (one); epochs [start_epoch, end_epoch).

    The ``distillers`` entries stay raw here; :mod:`torchslim.config.distillers` validates them."""

    class_name: ClassVar[str] = "DistillationStrategy"
    references: ClassVar[tuple[tuple[str, str], ...]] = (
        ("distiller", "distillers"),
        ("distillers", "distillers"),
    )

    distiller: str | None = spec(optional(as_str), None)
    distillers: list[str] | None = spec(optional(list_of(as_str, allow_scalar=True)), None)
    start_epoch: int = spec(as_int, 0, check=_NON_NEGATIVE)
    end_epoch: int | None = spec(optional(as_int), None, check=_NON_NEGATIVE)

    def validate(self, ctx: Context, path: KeyPath) -> None:
        super().validate(ctx, path)
        if self.distiller is None and not self.distillers:
            raise ctx.error((*path, "distiller"), "required key is missing (or give 'distillers')")


PRUNER_CLASSES: dict[str, type] = {StructurePrunerConfig.class_name: StructurePrunerConfig}
CONTROLLER_CLASSES: dict[str, type] = {SAControllerConfig.class_name: SAControllerConfig}
STRATEGY_CLASSES: dict[str, type[StrategyConfig]] = {
    cls.class_name: cls
    for cls in (UniformPruneConfig, SensitivePruneConfig, AutoPruneConfig, DistillationConfig)
}
UNSUPPORTED_CLASSES: dict[str, str] = {
    "QuantizationStrategy": "quantization is not supported by torchslim",
    "MKLDNNPostTrainingQuantStrategy": "quantization is not supported by torchslim",
    "LightNASStrategy": "neural architecture search is not supported by torchslim",
    "LightNASController": "neural architecture search is not supported by torchslim",
}
"""PaddleSlim 1.x classes recognised but deliberately not implemented."""


# ----------------------------------------------------------------------------- compressor & train


@dataclass(kw_only=True)
class CompressorConfig:
    """``compressor:`` - the epoch loop and what is written each epoch."""

    epoch: int = spec(as_int, check=_NON_NEGATIVE, doc="total number of epochs")
    checkpoint_path: str | None = spec(as_path_or_none, None, doc="null/'': no checkpoints")
    init_model: str | None = spec(as_path_or_none, None)
    eval_epoch: int = spec(as_int, 1, check=_POSITIVE_INT, doc="evaluate every N epochs")
    strategies: list[str] = spec(list_of(as_str), factory=list)
    save_eval_model: bool = spec(as_bool, True)
    prune_infer_model: Any = spec(plain, None, doc="seed key, kept raw")
    save_inference_model: bool = spec(as_bool, True)

    def validate(self, ctx: Context, path: KeyPath) -> None:
        seen: set[str] = set()
        for i, name in enumerate(self.strategies):
            if name in seen:
                raise ctx.error((*path, "strategies", i), f"strategy {name!r} is listed twice")
            seen.add(name)


def _increasing(values: list[int]) -> str | None:
    for i in range(1, len(values)):
        if values[i] <= values[i - 1]:
            return f"must be strictly increasing, got {short_repr(values)}"
    return None


def _step_epochs_check(values: list[int]) -> str | None:
    return each(_POSITIVE_INT)(values) or _increasing(values)


@dataclass(kw_only=True)
class TrainConfig:
    """``train:`` (torchslim's addition) - the fine-tuning run; epochs come from compressor.epoch."""

    key_hints: ClassVar[dict[str, str]] = {
        "num_epochs": "the number of epochs comes from compressor.epoch",
        "use_gpu": "use train.device ('auto', 'cpu', 'cuda', 'cuda:N')",
        "pretrained_model": "use compressor.init_model",
        "config_file": "that is a command-line flag, not a config key",
    }

    batch_size: int = spec(as_int, 256, check=_POSITIVE_INT)
    lr: float = spec(as_float, 0.1, check=interval(0, lo_open=True))
    lr_strategy: str = spec(choice(LR_STRATEGIES, "lr_strategy"), "piecewise_decay")
    l2_decay: float = spec(as_float, 3e-5, check=_NON_NEGATIVE)
    momentum_rate: float = spec(as_float, 0.9, check=interval(0, 1, hi_open=True))
    step_epochs: list[int] = spec(list_of(as_int), factory=lambda: [30, 60, 90], check=_step_epochs_check)
    warmup_epochs: int = spec(as_int, 0, check=_NON_NEGATIVE)
    label_smoothing: float = spec(as_float, 0.0, check=interval(0, 1, hi_open=True))
    total_images: int | None = spec(optional(as_int), None, doc="seed flag; accepted and ignored")
    model: str | None = spec(optional(as_str), None)
    data: str | None = spec(optional(as_str), None)
    num_classes: int | None = spec(optional(as_int), None, check=_POSITIVE_INT)
    input_size: int | None = spec(optional(as_int), None, check=_POSITIVE_INT)
    device: str = spec(_device, "auto")
    seed: int = spec(as_int, 0, check=_NON_NEGATIVE)
    train_limit: int | None = spec(optional(as_int), None, check=_POSITIVE_INT)
    val_limit: int | None = spec(optional(as_int), None, check=_POSITIVE_INT)
    num_workers: int | None = spec(
        optional(as_int), None, check=_NON_NEGATIVE, doc="null: none for in-memory data, else min(4, cores)"
    )
    bn_recalibration_batches: int = spec(
        as_int,
        20,
        check=_NON_NEGATIVE,
        doc="training batches to re-estimate batch-norm statistics on after pruning; 0: off "
        "(the default is torchslim.recovery.batch_norm.DEFAULT_BN_BATCHES, chosen by measurement)",
    )
    reconstruction_batches: int = spec(
        as_int,
        10,
        check=_NON_NEGATIVE,
        doc="training batches to refit, after each pruning step, the layers that lost input channels so they "
        "reproduce the unpruned outputs (torchslim.recovery.reconstruction); 0: off",
    )


# ----------------------------------------------------------------------------- the whole config


SECTIONS = (
    "version",
    "pruners",
    "controllers",
    "strategies",
    "distillers",
    "quantizers",
    "compressor",
    "train",
)


@dataclass(kw_only=True)
class SlimConfig:
    """A validated config; ``source`` (the top-level file) is not a key."""

    version: float = 1.0
    pruners: dict[str, StructurePrunerConfig] = field(default_factory=dict)
    controllers: dict[str, SAControllerConfig] = field(default_factory=dict)
    strategies: dict[str, StrategyConfig] = field(default_factory=dict)
    distillers: dict[str, dict[str, Any]] = field(default_factory=dict)
    quantizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    compressor: CompressorConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = field(default="<string>", compare=False)

    def active_strategies(self) -> list[StrategyConfig]:
        """The strategies listed in ``compressor.strategies``, in that order."""
        return [self.strategies[name] for name in self.compressor.strategies]

    def pruner_of(self, strategy: StrategyConfig) -> StructurePrunerConfig:
        return self.pruners[strategy.pruner]

    def controller_of(self, strategy: StrategyConfig) -> SAControllerConfig:
        return self.controllers[strategy.controller]

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data; ``parse_config`` reads it back."""
        return {
            "version": self.version,
            "pruners": to_plain(self.pruners),
            "controllers": to_plain(self.controllers),
            "strategies": to_plain(self.strategies),
            "distillers": to_plain(self.distillers),
            "quantizers": to_plain(self.quantizers),
            "compressor": to_plain(self.compressor),
            "train": to_plain(self.train),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, allow_unicode=True)

    def save(self, path: str) -> None:
        """Write the resolved config (YAML) next to a run's outputs."""
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"# resolved torchslim config (from {self.source})\n")
            handle.write(self.to_yaml())


def config_keys(cls: type) -> list[str]:
    """The YAML keys a config dataclass accepts (without ``class``)."""
    return [f.name for f in dataclasses.fields(cls) if "conv" in f.metadata]
