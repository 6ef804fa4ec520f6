"""The whole config as dataclasses: the ``compressor`` and ``train`` sections and :class:`SlimConfig`.

Each dataclass field that is a YAML key carries its converter and check in the field metadata
(see :func:`torchslim.config.validation.spec`); the sections whose entries name a class live in
:mod:`torchslim.config.classes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from torchslim.config.classes import SAControllerConfig, StrategyConfig, StructurePrunerConfig
from torchslim.config.messages import Context, KeyPath, short_repr
from torchslim.config.validation import (
    NON_NEGATIVE,
    POSITIVE_INT,
    as_bool,
    as_float,
    as_int,
    as_path_or_none,
    as_str,
    choice,
    each,
    interval,
    list_of,
    optional,
    plain,
    spec,
    to_plain,
)
from torchslim.errors import ModelError
from torchslim.export.pte import EXTRA_HINT, executorch_available

# Far above any real use; they keep a mistyped number from asking for terabytes of memory (the CLI's
# --input-size and --num-classes take the same bounds).
MAX_INPUT_SIZE = 4096
MAX_CLASSES = 100_000

LR_STRATEGIES = ("piecewise_decay", "cosine_decay")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device(ctx: Context, path: KeyPath, value: Any) -> str:
    text = as_str(ctx, path, value)
    if not _DEVICE.fullmatch(text):
        raise ctx.error(path, f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {short_repr(text)}")
    return text


# ----------------------------------------------------------------------------- compressor & train


@dataclass(kw_only=True)
class CompressorConfig:
    """``compressor:`` - the epoch loop and what is written each epoch."""

    epoch: int = spec(as_int, check=NON_NEGATIVE, doc="total number of epochs")
    checkpoint_path: str | None = spec(as_path_or_none, None, doc="null/'': no checkpoints")
    init_model: str | None = spec(as_path_or_none, None)
    eval_epoch: int = spec(as_int, 1, check=POSITIVE_INT, doc="evaluate every N epochs")
    strategies: list[str] = spec(list_of(as_str), factory=list)
    save_eval_model: bool = spec(as_bool, True)
    prune_infer_model: Any = spec(plain, None, doc="seed key, kept raw")
    save_inference_model: bool = spec(as_bool, True)
    save_executorch_model: bool = spec(
        as_bool,
        False,
        doc="also write each eval model as an ExecuTorch program (model.pte, XNNPACK; and model.int8.pte "
        "beside a post-training quantization's model.int8.onnx); needs the executorch extra",
    )

    def validate(self, ctx: Context, path: KeyPath) -> None:
        if self.save_executorch_model and not executorch_available():
            # located like a config error, but an environment one: the exit code every missing extra has
            where = ctx.error(
                (*path, "save_executorch_model"), f"needs ExecuTorch, which is not installed: {EXTRA_HINT}"
            )
            raise ModelError(str(where))
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
    return each(POSITIVE_INT)(values) or _increasing(values)


@dataclass(kw_only=True)
class TrainConfig:
    """``train:`` (torchslim's addition) - the fine-tuning run; epochs come from compressor.epoch."""

    key_hints: ClassVar[dict[str, str]] = {
        "num_epochs": "the number of epochs comes from compressor.epoch",
        "use_gpu": "use train.device ('auto', 'cpu', 'cuda', 'cuda:N')",
        "pretrained_model": "use compressor.init_model",
        "config_file": "that is a command-line flag, not a config key",
    }

    batch_size: int = spec(as_int, 256, check=POSITIVE_INT)
    lr: float = spec(as_float, 0.1, check=interval(0, lo_open=True))
    lr_strategy: str = spec(choice(LR_STRATEGIES, "lr_strategy"), "piecewise_decay")
    l2_decay: float = spec(as_float, 3e-5, check=NON_NEGATIVE)
    momentum_rate: float = spec(as_float, 0.9, check=interval(0, 1, hi_open=True))
    step_epochs: list[int] = spec(list_of(as_int), factory=lambda: [30, 60, 90], check=_step_epochs_check)
    warmup_epochs: int = spec(as_int, 0, check=NON_NEGATIVE)
    label_smoothing: float = spec(as_float, 0.0, check=interval(0, 1, hi_open=True))
    total_images: int | None = spec(optional(as_int), None, doc="seed flag; accepted and ignored")
    model: str | None = spec(optional(as_str), None)
    data: str | None = spec(optional(as_str), None)
    num_classes: int | None = spec(optional(as_int), None, check=interval(1, MAX_CLASSES))
    input_size: int | None = spec(optional(as_int), None, check=interval(1, MAX_INPUT_SIZE))
    device: str = spec(_device, "auto")
    seed: int = spec(as_int, 0, check=NON_NEGATIVE)
    train_limit: int | None = spec(optional(as_int), None, check=POSITIVE_INT)
    val_limit: int | None = spec(optional(as_int), None, check=POSITIVE_INT)
    num_workers: int | None = spec(
        optional(as_int), None, check=NON_NEGATIVE, doc="null: none for in-memory data, else min(4, cores)"
    )
    bn_recalibration_batches: int = spec(
        as_int,
        20,
        check=NON_NEGATIVE,
        doc="training batches to re-estimate batch-norm statistics on after pruning; 0: off "
        "(the default is torchslim.recovery.batch_norm.DEFAULT_BN_BATCHES)",
    )
    reconstruction_batches: int = spec(
        as_int,
        10,
        check=NON_NEGATIVE,
        doc="training batches to refit, after each pruning step, the layers that lost input channels "
        "on, at most as many images as fit in its memory budget (torchslim.recovery.reconstruction); "
        "0: off",
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
