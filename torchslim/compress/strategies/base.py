"""What every compression strategy looks like to the compressor: hooks and resumable state.

Each implementation is registered under the YAML class name of the config it implements
(:func:`implements`); :func:`build_strategy` builds a config entry's strategy from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from torchslim.errors import ConfigError
from torchslim.registry import Registry


@dataclass
class CompressionContext:
    """The run as strategies see it. A strategy that changes the model sets ``model_changed``."""

    model: nn.Module
    base_name: str
    base_kwargs: dict[str, Any]
    example_input: torch.Tensor  # one image, on the model's device
    aliases: dict[str, str]  # parameter name -> seed name
    epoch: int = 0
    model_changed: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    train_loader: Any = None  # the training DataLoader (data-driven criteria, BN re-estimation)
    val_loader: Any = None  # the validation DataLoader
    evaluate: Any = None  # callable(model=None) -> EvalResult on the validation data, or None
    after_prune: Any = None  # callable(model) run after every pruning step (e.g. BN re-estimation)
    # callable(original, pruned, group_set, mask) -> dict: refits layers after a pruning step (reconstruction)
    reconstruct: Any = None
    loss_fn: Any = None  # callable(outputs, targets, images) -> loss replacing cross-entropy (distillation)
    rank: int = 0  # this process's rank under torchrun (0 when not distributed)
    world_size: int = 1
    events: list[dict[str, Any]] = field(default_factory=list)  # what strategies did, for the report

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0


class Strategy:
    """Base class: every hook does nothing. ``state_dict`` values must be JSON-able, or tensors
    (or dicts of them), which checkpoints keep in their tensor file.

    Every strategy is built as ``cls(name, config, slim_config)``: the entry's name, its config
    dataclass and the whole config."""

    config_class: ClassVar[type]

    def __init__(self, name: str, config: Any, slim_config: Any) -> None:
        self.name = name
        self.config = config

    def on_compression_begin(self, context: CompressionContext) -> None:
        pass

    def on_resume(self, context: CompressionContext) -> None:
        """After a checkpoint is loaded (``context.epoch``: the epoch it ended), before the optimizer is
        built from its state: a strategy that trains another module than the saved one restores it."""

    def on_epoch_begin(self, context: CompressionContext) -> None:
        pass

    def on_batch_begin(self, context: CompressionContext, batch_index: int) -> None:
        pass

    def on_batch_end(self, context: CompressionContext, batch_index: int, loss: float) -> None:
        pass

    def on_epoch_end(self, context: CompressionContext) -> None:
        pass

    def on_compression_end(self, context: CompressionContext) -> None:
        pass

    def extra_parameters(self, context: CompressionContext) -> list[nn.Parameter]:
        """Parameters outside the model that training must update (e.g. distillation adapters).

        The compressor asks when it builds the optimizer and after every epoch's
        ``on_epoch_begin`` hooks (so after pruning); a different list rebuilds the optimizer.
        """
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


STRATEGIES: Registry[type[Strategy]] = Registry("strategy class")


def implements(config_class: type) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: the strategy for entries of ``config_class``, registered under its YAML name."""

    def register(cls: type[Strategy]) -> type[Strategy]:
        cls.config_class = config_class
        return STRATEGIES.register(config_class.class_name, cls)

    return register


def build_strategy(name: str, config: Any, slim_config: Any) -> Strategy:
    """The strategy object for config entry ``strategies.<name>``."""
    class_name = type(config).class_name
    if class_name not in STRATEGIES:
        implemented = ", ".join(STRATEGIES.get(n).config_class.class_name for n in STRATEGIES)
        raise ConfigError(
            f"{slim_config.source}: strategies.{name}: unknown strategy class {class_name} "
            f"(implemented: {implemented})"
        )
    return STRATEGIES.get(class_name)(name, config, slim_config)
