"""Latency measurement for ``torchslim infer`` and the benchmarks.

Comparisons between variants (dense vs pruned, PyTorch vs ONNX Runtime) should use
:func:`time_interleaved`: every round calls each variant once, rotating the order, so
slow drifts of the machine (frequency scaling, other processes) hit all variants alike.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

__all__ = [
    "TimingResult",
    "interleaved_order",
    "ort_callable",
    "robust_ms",
    "speedup",
    "time_callable",
    "time_interleaved",
    "torch_callable",
    "torch_threads",
]


@dataclass(frozen=True)
class TimingResult:
    """Latency statistics in milliseconds over ``runs`` timed calls."""

    median_ms: float
    mean_ms: float
    min_ms: float
    p90_ms: float
    runs: int
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_samples(cls, samples_ms: list[float] | tuple[float, ...]) -> TimingResult:
        if not samples_ms:
            raise ValueError("no timing samples")
        s = tuple(float(v) for v in samples_ms)
        return cls(
            median_ms=statistics.median(s),
            mean_ms=statistics.fmean(s),
            min_ms=min(s),
            p90_ms=_percentile(s, 90.0),
            runs=len(s),
            samples_ms=s,
        )


def _percentile(values: tuple[float, ...], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _check_counts(warmup: int, runs: int, runs_name: str) -> None:
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if runs < 1:
        raise ValueError(f"{runs_name} must be >= 1, got {runs}")


def time_callable(fn: Callable[[], object], *, warmup: int = 10, runs: int = 30) -> TimingResult:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed with perf_counter."""
    _check_counts(warmup, runs, "runs")
    for _ in range(warmup):
        fn()
    samples = []
    clock = time.perf_counter
    for _ in range(runs):
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1000.0)
    return TimingResult.from_samples(samples)


def interleaved_order(names: list[str], round_index: int) -> list[str]:
    """The call order of round ``round_index``: ``names`` rotated left by the round number.

    With two variants this alternates A B, B A, A B, ...
    """
    k = round_index % len(names)
    return names[k:] + names[:k]


def time_interleaved(
    fns: Mapping[str, Callable[[], object]], *, warmup: int = 5, rounds: int = 30, calls_per_round: int = 1
) -> dict[str, TimingResult]:
    """Time several callables in interleaved rounds.

    Each round calls every function ``calls_per_round`` times in a row, the functions in an order
    rotated by one each round (see :func:`interleaved_order`); ``warmup`` rounds run first, untimed.
    Returns one :class:`TimingResult` per name, whose ``samples_ms[i]`` is the mean time of a call in
    round ``i``.
    """
    if not fns:
        raise ValueError("time_interleaved needs at least one callable")
    _check_counts(warmup, rounds, "rounds")
    if calls_per_round < 1:
        raise ValueError(f"calls_per_round must be >= 1, got {calls_per_round}")
    names = list(fns)
    for r in range(warmup):
        for name in interleaved_order(names, r):
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    calls = range(calls_per_round)
    for r in range(rounds):
        for name in interleaved_order(names, r):
            fn = fns[name]
            t0 = clock()
            for _ in calls:
                fn()
            samples[name].append((clock() - t0) * 1000.0 / calls_per_round)
    return {name: TimingResult.from_samples(samples[name]) for name in names}


def robust_ms(samples: Iterable[float], quantile: float = 0.2) -> float:
    """A low quantile of timing samples: on a shared machine other processes only ever add time,
    so the fast end of the distribution is the code's own cost and is stable run to run."""
    ordered = sorted(samples)
    return float(ordered[min(int(quantile * len(ordered)), len(ordered) - 1)])


def speedup(base: TimingResult, other: TimingResult) -> float:
    """How many times faster ``other`` is than ``base``: base.median / other.median."""
    if other.median_ms <= 0.0:
        return math.inf
    return base.median_ms / other.median_ms


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily run PyTorch CPU ops with ``n`` threads (``None``: leave as is)."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def torch_callable(
    model: nn.Module,
    example: torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> Callable[[], torch.Tensor]:
    """A no-argument callable running ``model(example)`` without autograd.

    The model and example are moved to ``device`` once, here (``model.to`` moves the
    caller's module); the model's train/eval mode is not changed, so pass an eval-mode
    model. On CUDA each call waits for the GPU (``torch.cuda.synchronize``) so the time
    covers the work. ``threads`` applies ``torch_threads(threads)`` around each call.
    """
    device = torch.device(device)
    model = model.to(device)
    x = example.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def run() -> torch.Tensor:
        with torch_threads(threads), torch.no_grad():
            out = model(x)
            if sync is not None:
                sync(device)
        return out

    return run


def ort_callable(
    ort_model: Callable[[np.ndarray], np.ndarray], example_np: np.ndarray
) -> Callable[[], np.ndarray]:
    """A no-argument callable running an :class:`~torchslim.export.ort.OrtModel` on ``example_np``."""
    x = np.ascontiguousarray(example_np, dtype=np.float32)

    def run() -> np.ndarray:
        return ort_model(x)

    return run
