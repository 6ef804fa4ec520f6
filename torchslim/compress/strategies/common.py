"""Helpers the pruning strategies share: criterion, data slices, torchrun refusal."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

import torch.distributed as dist

from torchslim.criteria import data_criterion
from torchslim.criteria.data_driven import DEFAULT_BATCHES
from torchslim.engine.cached import Batch, cache_batches
from torchslim.errors import ConfigError
from torchslim.sensitivity.scan import slice_samples

from .base import CompressionContext


def refuse_distributed(context: CompressionContext, name: str, what: str) -> None:
    """Scans and searches decide on one process's data; under torchrun the ranks would choose differently."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else context.world_size
    if world > 1:
        raise ConfigError(
            f"strategies.{name}: {what} does not run under torchrun yet (the ranks would measure on "
            "different data and prune differently); run it on one process, then fine-tune the saved model "
            "under torchrun"
        )


def pruner_criterion(pruner: Any) -> str:
    return pruner.criterions.get("*") or next(iter(pruner.criterions.values()))


def training_batches(context: CompressionContext, criterion: str) -> Iterable | None:
    """A few training batches for a data-driven criterion; None for weight criteria."""
    if data_criterion(criterion) is None:
        return None
    if context.train_loader is None:
        raise ConfigError(f"criterion {criterion!r} needs training data, but the run has no training loader")
    return islice(context.train_loader, DEFAULT_BATCHES)


def validation_slice(
    context: CompressionContext, eval_rate: float | None, data_spec: str
) -> tuple[list[Batch], str, int]:
    """(cached batches, description, sample count) of the first ``eval_rate`` of the validation data."""
    if context.val_loader is None:
        raise ConfigError("this strategy measures the metric on validation data, but the run has none")
    samples = slice_samples(len(context.val_loader.dataset), eval_rate)
    batches = cache_batches(context.val_loader, samples, context.device)
    size = context.example_input.shape[-1]
    return batches, f"{data_spec} val[:{samples}] at {size}px", samples
