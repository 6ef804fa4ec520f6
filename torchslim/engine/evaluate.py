"""Top-1 / top-5 evaluation, optionally summed over distributed ranks."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from torchslim.nn import eval_mode


@dataclass(frozen=True)
class EvalResult:
    """Accuracies in percent, mean cross-entropy, and how many samples were seen.

    With no samples at all the three metrics are NaN.
    """

    top1: float
    top5: float
    loss: float
    samples: int


def accuracy_counts(outputs: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Number of samples whose target is among the top-k outputs, for each k.

    Returns a ``long`` tensor of ``len(ks)`` counts on ``outputs``' device
    (no host sync). With fewer than k classes, top-k means top-``num_classes``,
    which every sample passes.
    """
    num_classes = outputs.shape[1]
    kmax = min(max(ks), num_classes)
    top = outputs.topk(kmax, dim=1).indices
    hits = top == targets.reshape(-1, 1)
    return torch.stack([hits[:, : min(k, num_classes)].any(dim=1).sum() for k in ks])


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    max_batches: int | None = None,
    distributed: bool = False,
) -> EvalResult:
    """Top-1 / top-5 accuracy and mean cross-entropy of ``model`` over ``loader``.

    Runs in eval mode under ``torch.inference_mode`` and leaves the model's modes as they were.
    With ``distributed`` and an initialized process group the counts are summed over all ranks,
    so each rank must see a disjoint shard.
    """
    device = torch.device(device)
    # correct@1, correct@5, loss sum, samples; float64 keeps big counts exact.
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    bar = tqdm(loader, desc="eval", disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True)
    with eval_mode(model), torch.inference_mode(), bar:
        for images, targets in islice(bar, max_batches):
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            outputs = model(images)
            totals[:2] += accuracy_counts(outputs, targets)
            totals[2] += F.cross_entropy(outputs.float(), targets, reduction="sum")
            totals[3] += len(targets)
        if distributed and dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    correct1, correct5, loss_sum, samples = totals.tolist()
    if samples == 0:
        return EvalResult(top1=float("nan"), top5=float("nan"), loss=float("nan"), samples=0)
    return EvalResult(
        top1=100.0 * correct1 / samples,
        top5=100.0 * correct5 / samples,
        loss=loss_sum / samples,
        samples=int(samples),
    )


def evaluate_onnx(run: Callable[[np.ndarray], np.ndarray], loader: Iterable) -> EvalResult:
    """Top-1/top-5 and loss of a model run outside PyTorch (``run``: float32 NCHW batch -> logits),
    e.g. an ONNX Runtime session."""
    counts = torch.zeros(2, dtype=torch.float64)
    loss_sum, samples = 0.0, 0
    for images, targets in loader:
        logits = torch.from_numpy(np.asarray(run(images.numpy().astype(np.float32))))
        counts += accuracy_counts(logits, targets, ks=(1, 5)).double()
        loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
        samples += len(targets)
    return EvalResult(
        top1=100.0 * float(counts[0]) / samples,
        top5=100.0 * float(counts[1]) / samples,
        loss=loss_sum / samples,
        samples=samples,
    )
