"""What every pruning strategy does after it cuts the model: evaluate, re-estimate BN, reconstruct, record."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from torchslim.graph import GroupSet
from torchslim.pruning.counting import channel_counts
from torchslim.reporting.plots import plot_channels

from .base import CompressionContext

log = logging.getLogger(__name__)


@dataclass
class PruneStep:
    """What a pruning step needs to hand to reconstruction: the model before it, and the plan applied."""

    original: nn.Module | None
    group_set: GroupSet
    mask: np.ndarray


def snapshot(context: CompressionContext) -> nn.Module | None:
    """A copy of the model before a pruning step, when the run refits layers afterwards (else None)."""
    return copy.deepcopy(context.model) if context.reconstruct is not None else None


def finish_pruning(
    context: CompressionContext,
    event: dict[str, Any],
    plot_path: Path | None,
    before: dict,
    step: PruneStep | None = None,
) -> None:
    """After an in-place prune: flag the change, evaluate, re-estimate BN, reconstruct, plot, record."""
    context.model_changed = True
    if context.evaluate is not None:
        event["top1_after_prune"] = context.evaluate().top1
    if context.after_prune is not None:
        context.after_prune(context.model)
        if context.evaluate is not None:
            event["top1_after_bn_recalibration"] = context.evaluate().top1
    if context.reconstruct is not None and step is not None and step.original is not None:
        event["reconstruction"] = context.reconstruct(step.original, context.model, step.group_set, step.mask)
        if context.evaluate is not None:
            event["top1_after_reconstruction"] = context.evaluate().top1
    after = channel_counts(context.model)
    event["channels"] = {n: [before[n], c] for n, c in after.items() if c != before.get(n)}
    if plot_path is not None and context.is_main_process:
        try:
            plot_channels(before, after, plot_path, title=f"{event['strategy']}: channels per layer")
            event["channels_plot"] = str(plot_path)
        except (OSError, ValueError) as error:  # a plot must never fail a run
            log.warning("could not write %s: %s", plot_path, error)
    context.events.append(event)
