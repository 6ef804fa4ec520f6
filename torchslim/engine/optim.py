"""Optimizer and learning-rate schedules for fine-tuning.

The schedules are expressed as a multiplier of the base learning rate and
advance once per *batch* (call ``scheduler.step()`` after each optimizer step),
so a warm-up or a cosine curve is smooth within an epoch and a resumed run can
restore the schedule exactly from ``scheduler.state_dict()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

LR_STRATEGIES = ("piecewise_decay", "cosine_decay", "constant")


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    l2_decay: float = 0.0,
    decay_bn_and_bias: bool = False,
) -> torch.optim.SGD:
    """SGD with momentum, with L2 decay on conv / linear weights only.

    Parameters with ``ndim <= 1`` (BatchNorm scales and shifts, biases) go to a second group
    without decay unless ``decay_bn_and_bias``: decaying BN scales would also distort BN-scale
    importance scores. Frozen parameters are left out. Group 0 holds the decayed parameters.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if decay_bn_and_bias or param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": l2_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def lr_multiplier(
    *,
    strategy: str,
    epochs: float,
    steps_per_epoch: int,
    step_epochs: Sequence[float] = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
) -> Callable[[int], float]:
    """The factor applied to the base LR at a given global step (batch count).

    ``t = step / steps_per_epoch`` is the (fractional) epoch. ``piecewise_decay``
    multiplies by ``gamma`` once for every boundary in ``step_epochs`` that
    ``t`` has reached; ``cosine_decay`` follows ``0.5 * (1 + cos(pi * t / epochs))``
    and stays at 0 after ``epochs``; ``constant`` is 1. A linear warm-up
    multiplies the first ``warmup_epochs`` by ``(step + 1) / warmup_steps``,
    starting near 0 and reaching the schedule's value at the end of warm-up.
    """
    if strategy not in LR_STRATEGIES:
        raise ValueError(f"unknown learning-rate strategy {strategy!r}; known: {', '.join(LR_STRATEGIES)}")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    boundaries = sorted(float(b) for b in step_epochs)
    warmup_steps = round(warmup_epochs * steps_per_epoch)

    def multiplier(step: int) -> float:
        t = step / steps_per_epoch
        if strategy == "piecewise_decay":
            factor = gamma ** sum(1 for b in boundaries if t >= b)
        elif strategy == "cosine_decay":
            factor = 0.5 * (1.0 + math.cos(math.pi * min(t, epochs) / epochs))
        else:
            factor = 1.0
        if step < warmup_steps:
            factor *= (step + 1) / warmup_steps
        return factor

    return multiplier


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, **schedule: Any
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-batch ``LambdaLR`` following :func:`lr_multiplier` (``schedule`` holds its keyword arguments).

    The multiplier is a plain closure, so ``state_dict()`` holds only numbers and loads with
    ``torch.load(weights_only=True)``.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(**schedule))
