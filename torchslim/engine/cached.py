"""Evaluation on a few batches cached once on the device (scans, plan scores)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from torchslim.engine.evaluate import accuracy_counts
from torchslim.errors import PruningError
from torchslim.nn import eval_mode

METRICS = {"top1_acc": 0, "top5_acc": 1}

Batch = tuple[torch.Tensor, torch.Tensor]


def cache_batches(loader: Iterable, samples: int | None, device: torch.device | str) -> list[Batch]:
    """The first ``samples`` (all when None) items of ``loader`` as batches on ``device``, read once."""
    device = torch.device(device)
    batches: list[Batch] = []
    seen = 0
    for images, targets in loader:
        if samples is not None and seen + len(targets) > samples:
            images, targets = images[: samples - seen], targets[: samples - seen]
        if len(targets):
            batches.append((images.to(device), targets.to(device)))
            seen += len(targets)
        if samples is not None and seen >= samples:
            break
    if not batches:
        raise PruningError("the validation slice is empty: no samples to measure sensitivities on")
    return batches


def evaluate_batches(model: nn.Module, batches: Sequence[Batch], metric: str = "top1_acc") -> float:
    """Top-1 or top-5 accuracy (percent) of ``model`` on cached batches, in eval mode, without autograd."""
    column = METRICS.get(metric)
    if column is None:
        raise PruningError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    correct = 0
    total = 0
    with eval_mode(model), torch.inference_mode():
        for images, targets in batches:
            correct += int(accuracy_counts(model(images), targets)[column])
            total += len(targets)
    return 100.0 * correct / max(total, 1)


def top1_score(
    batches: Sequence[Batch], before: Callable[[nn.Module], Any] | None = None
) -> Callable[[nn.Module], float]:
    """``score(model)``: ``before(model)`` (e.g. BN re-estimation of a pruned copy), then top-1."""

    def score(model: nn.Module) -> float:
        if before is not None:
            before(model)
        return evaluate_batches(model, batches)

    return score
