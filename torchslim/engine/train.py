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


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`train_one_epoch` trains; ``dataclasses.replace`` gives an epoch its own loss or hooks."""

    device: str | torch.device = "cpu"
    loss_fn: LossFn | None = None  # loss_fn(outputs, targets, images) replaces cross-entropy
    label_smoothing: float = 0.0
    amp_dtype: torch.dtype | None = None  # enables torch.autocast; float16 wants a GradScaler
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False  # converts the inputs only; convert the model yourself
    hooks: Any = None  # may define on_batch_begin(i, images, targets) and on_batch_end(i, loss_value)
    progress: bool = True
    log_every: int = 20  # batches between refreshes of the progress bar's loss, LR and images/s
    max_batches: int | None = None


class _Tally:
    """Running loss, train top-1 and throughput of one epoch."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum, self.seen, self.batches = 0.0, 0, 0
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.start = time.perf_counter()

    def add(self, outputs: torch.Tensor, targets: torch.Tensor, loss_value: float) -> None:
        if targets.ndim == 1:  # class indices; soft targets have no top-1
            self.correct += (outputs.argmax(dim=1) == targets).sum()
        self.loss_sum += loss_value * len(targets)
        self.seen += len(targets)
        self.batches += 1

    def rate(self) -> float:
        return self.seen / max(time.perf_counter() - self.start, 1e-9)

    def stats(self, lr: float) -> EpochStats:
        seconds = time.perf_counter() - self.start
        return EpochStats(
            loss=self.loss_sum / self.seen,
            top1=100.0 * self.correct.item() / self.seen,
            images=self.seen,
            seconds=seconds,
            images_per_s=self.seen / max(seconds, 1e-9),
            lr=lr,
            batches=self.batches,
        )


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    options: TrainOptions | None = None,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    epoch: int = 0,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader``; the scheduler steps per batch.

    A non-finite loss raises :class:`TrainingError` before the backward pass, so that batch
    leaves the weights untouched. A sampler with ``set_epoch`` gets ``epoch`` first, which
    makes the shuffle order a function of the epoch (see :mod:`torchslim.data.shuffle`).
    """
    options = options or TrainOptions()
    device = torch.device(options.device)
    begin = getattr(options.hooks, "on_batch_begin", None)
    end = getattr(options.hooks, "on_batch_end", None)
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)
    model.train()
    tally = _Tally(device)
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}",
        disable=not options.progress,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )
    with bar:
        for i, (images, targets) in enumerate(islice(bar, options.max_batches)):
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if options.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if begin is not None:
                begin(i, images, targets)
            outputs, loss = _forward(model, images, targets, device, options)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"training diverged: loss is {loss_value} at epoch {epoch}, batch {i}; "
                    "try a lower learning rate"
                )
            _step(loss, optimizer, options.scaler)
            if scheduler is not None:
                scheduler.step()
            tally.add(outputs, targets, loss_value)
            if end is not None:
                end(i, loss_value)
            if options.progress and i % max(options.log_every, 1) == 0:
                lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.3g}", img_s=f"{tally.rate():.0f}")
    if tally.seen == 0:
        raise TrainingError(f"epoch {epoch}: the training loader yielded no batches")
    return tally.stats(optimizer.param_groups[0]["lr"])


def _forward(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, device: torch.device, options: TrainOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and loss of one batch, under autocast when ``options.amp_dtype`` is set."""
    with torch.autocast(device.type, dtype=options.amp_dtype, enabled=options.amp_dtype is not None):
        outputs = model(images)
        if options.loss_fn is None:
            return outputs, F.cross_entropy(outputs, targets, label_smoothing=options.label_smoothing)
        return outputs, options.loss_fn(outputs, targets, images)


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
