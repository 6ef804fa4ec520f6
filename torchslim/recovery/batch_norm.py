"""Batch-norm re-estimation: recompute BN running statistics after pruning.

Pruning removes channels, so every batch norm after a pruned layer sees inputs
whose mean and variance no longer match its running statistics; in eval mode
the network then normalises with stale numbers and can collapse to chance.
Forwarding a few training batches with only the batch norms in train mode, and
averaging their batch statistics cumulatively (``momentum=None``), restores them
without touching a single weight. The statistics' error falls as 1/sqrt(N), so
``DEFAULT_BN_BATCHES`` is a small fraction of an epoch;
``train.bn_recalibration_batches: 0`` (``torchslim prune --bn-batches 0``) turns it off.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from torchslim.nn import eval_mode

DEFAULT_BN_BATCHES = 20


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch norms of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
    ]


def recalibrate_batch_norm(
    model: nn.Module,
    loader: Any,
    *,
    num_batches: int = DEFAULT_BN_BATCHES,
    device: str | torch.device = "cpu",
    distributed: bool = False,
) -> int:
    """Recompute the running mean / variance of every batch norm in ``model`` on ``num_batches`` batches.

    The running statistics are reset and re-estimated as the plain average of
    the batch statistics of the first ``num_batches`` batches of ``loader``
    (items ``(images, targets)`` or bare image tensors). Forward passes run
    under ``torch.no_grad`` with only the batch norms in train mode (dropout
    and everything else in eval mode); afterwards every module's train / eval
    mode, every batch norm's momentum and the global RNG state are as they were,
    and no parameter changes. With ``distributed`` and an initialised process group,
    the statistics are averaged over ranks (every rank must call this). A
    ``DistributedDataParallel`` wrapper is looked through. Returns the number of
    batches used (0 when the model has no batch norm or ``num_batches`` is 0).
    """
    if num_batches < 0:
        raise ValueError(f"num_batches must be >= 0, got {num_batches}")
    if isinstance(model, DistributedDataParallel):
        model = model.module
    layers = batch_norm_layers(model)
    if not layers or num_batches == 0:
        return 0
    device = torch.device(device)
    momenta = [(bn, bn.momentum) for bn in layers]
    used = 0
    try:
        with eval_mode(model):
            for bn in layers:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative moving average: the mean of all batch statistics
                bn.train()
            # fork_rng: augmentations drawn here leave the global RNG as it was, so switching
            # re-estimation on or off changes nothing else in a seeded run.
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                for batch in islice(loader, num_batches):
                    images = batch[0] if isinstance(batch, list | tuple) else batch
                    model(images.to(device, non_blocking=True))
                    used += 1
        if distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            _average_over_ranks(layers)
    finally:
        for bn, momentum in momenta:
            bn.momentum = momentum
    return used


def _average_over_ranks(layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
    """Replace each rank's running mean / variance by the mean over ranks (one all_reduce)."""
    flat = torch.cat([torch.cat([bn.running_mean, bn.running_var]).float() for bn in layers])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for bn in layers:
        n = bn.running_mean.numel()
        bn.running_mean.copy_(flat[offset : offset + n])
        bn.running_var.copy_(flat[offset + n : offset + 2 * n])
        offset += 2 * n
