"""One epoch of supervised training, model-agnostic."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from torchslim.errors import TrainingError

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did: mean loss, train top-1 (%), throughput, last LR."""

    loss: float
    top1: float
    images: int
    seconds: float
    images_per_s: float
    lr: float
    batches: int


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    device: str | torch.device = "cpu",
    epoch: int = 0,
    loss_fn: LossFn | None = None,
    label_smoothing: float = 0.0,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    hooks: Any = None,
    progress: bool = True,
    log_every: int = 20,
    max_batches: int | None = None,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader``; the scheduler steps per batch.

    ``loss_fn(outputs, targets, images)`` replaces cross-entropy (distillation).
    ``hooks`` may define ``on_batch_begin(i, images, targets)`` and
    ``on_batch_end(i, loss_value)``; missing methods are skipped. A non-finite
    loss raises :class:`TrainingError` before the backward pass, so that batch
    leaves the weights untouched. ``amp_dtype`` enables ``torch.autocast`` (pass
    a ``GradScaler`` for float16, see :func:`autocast_settings`). If the loader's
    sampler has ``set_epoch`` it is called with ``epoch`` first, which makes the
    shuffle order a function of the epoch (see :mod:`torchslim.data.shuffle`).
    ``channels_last`` converts the inputs only; convert the model yourself.
    Train top-1 counts only class-index (1-D) targets; the progress bar's
    postfix (loss, LR, images/s) is refreshed every ``log_every`` batches.
    """
    device = torch.device(device)
    begin, end = getattr(hooks, "on_batch_begin", None), getattr(hooks, "on_batch_end", None)
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)
    model.train()
    loss_sum, seen, batches, correct = 0.0, 0, 0, torch.zeros((), dtype=torch.long, device=device)
    start = time.perf_counter()
    bar = tqdm(
        loader, desc=f"epoch {epoch}", disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True
    )
    with bar:
        for i, (images, targets) in enumerate(islice(bar, max_batches)):
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if begin is not None:
                begin(i, images, targets)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(images)
                if loss_fn is None:
                    loss = F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)
                else:
                    loss = loss_fn(outputs, targets, images)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"training diverged: loss is {loss_value} at epoch {epoch}, batch {i}; "
                    "try a lower learning rate"
                )
            _step(loss, optimizer, scaler)
            if scheduler is not None:
                scheduler.step()
            if targets.ndim == 1:
                correct += (outputs.argmax(dim=1) == targets).sum()
            loss_sum, seen, batches = loss_sum + loss_value * len(images), seen + len(images), batches + 1
            if end is not None:
                end(i, loss_value)
            if progress and i % max(log_every, 1) == 0:
                rate = seen / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(
                    loss=f"{loss_value:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}", img_s=f"{rate:.0f}"
                )
    if seen == 0:
        raise TrainingError(f"epoch {epoch}: the training loader yielded no batches")
    seconds = time.perf_counter() - start
    return EpochStats(
        loss=loss_sum / seen,
        top1=100.0 * correct.item() / seen,
        images=seen,
        seconds=seconds,
        images_per_s=seen / max(seconds, 1e-9),
        lr=optimizer.param_groups[0]["lr"],
        batches=batches,
    )


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Backward and optimizer step, through the GradScaler when one is given."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
