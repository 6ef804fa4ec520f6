"""Several models timed side by side (interleaved) on one runtime, and their speedups."""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.export import export_onnx
from torchslim.export.sessions import TimingSession
from torchslim.export.timing import ort_callable, time_interleaved, torch_callable, torch_threads
from torchslim.latency.machine import DEFAULT_THREADS, check_runtime


@dataclass
class LatencyComparison:
    """Median latencies (ms) of several models timed interleaved, and speedups against the first."""

    runtime: str
    threads: int
    batch_size: int
    device: str
    median_ms: dict[str, float]
    speedup: dict[str, float]  # label -> median of the per-round ratios base/label, over the rounds used
    rounds: int
    samples_ms: dict[str, list[float]] = field(default_factory=dict, repr=False)  # every round, used or not
    rounds_used: int = 0  # the steady rounds (see steady_rounds), or all when too few were steady
    steady: bool = True  # False: fewer than half the rounds were steady, so all were used

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("samples_ms")
        return data


def export_for_timing(model: nn.Module, input_size: int, path: Path) -> Path:
    """An ONNX file of ``model`` (dynamic batch) for timing, not verified against PyTorch."""
    example = torch.randn(1, 3, input_size, input_size)
    export_onnx(copy.deepcopy(model).cpu().float().eval(), example, path, verify=False)
    return path


@dataclass(frozen=True)
class RuntimeSettings:
    """Where models are timed: the runtime, the batch size, intra-op threads and the device."""

    runtime: str = "onnxruntime"
    batch_size: int = 1
    threads: int = DEFAULT_THREADS
    device: str = "cpu"


def _timing_callables(
    models: dict[str, nn.Module],
    input_size: int,
    settings: RuntimeSettings,
    workdir: str | os.PathLike | None,
    onnx_paths: dict[str, Path] | None,
) -> dict[str, Callable[[], object]]:
    """A no-argument callable per model running one batch on the runtime (ONNX files go to ``workdir``)."""
    check_runtime(settings.runtime)
    shape = (settings.batch_size, 3, input_size, input_size)
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if settings.runtime == "eager":
        return {
            label: torch_callable(copy.deepcopy(model).eval(), example, device=settings.device)
            for label, model in models.items()
        }
    onnx_paths = dict(onnx_paths or {})
    if workdir is None and set(models) - set(onnx_paths):
        raise ValueError("a workdir is needed to export models for ONNX Runtime")
    functions = {}
    for index, (label, model) in enumerate(models.items()):
        path = onnx_paths.get(label)
        if path is None:
            path = export_for_timing(model, input_size, Path(workdir) / f"model{index}.onnx")
        functions[label] = ort_callable(
            TimingSession(path, settings.threads, settings.device), example.numpy()
        )
    return functions


# A round whose first (base) model took more than this times its fastest round ran while a shared
# machine was slowed down, a state in which pruned models lose more than unpruned ones.
STEADY_BAND = 1.12


def steady_rounds(base_ms, band: float = STEADY_BAND) -> tuple[np.ndarray, bool]:
    """Which rounds to use: those whose base-model time is within ``band`` of its fastest, or all of them
    (and False) when fewer than half are."""
    base = np.asarray(base_ms, dtype=float)
    steady = base <= band * base.min()
    if int(steady.sum()) < (len(base) + 1) // 2:
        return np.ones_like(steady), False
    return steady, True


def compare_latency(
    models: dict[str, nn.Module],
    input_size: int,
    *,
    runtime: str = "onnxruntime",
    batch_size: int = 1,
    threads: int = DEFAULT_THREADS,
    device: str = "cpu",
    warmup: int = 5,
    rounds: int = 30,
    workdir: str | os.PathLike | None = None,
    onnx_paths: dict[str, Path] | None = None,
) -> LatencyComparison:
    """Time ``models`` interleaved on ``runtime``; speedups are against the first model.

    PyTorch runs with ``threads`` intra-op threads, ONNX Runtime sessions with
    ``intra_op_num_threads=threads``. ``onnx_paths`` reuses exported files; on
    ONNX Runtime a model whose file is given is not used and may be None.
    Medians and speedups come from the :func:`steady_rounds` (every model is
    timed in every round, so the first model's time says how fast the machine
    ran that round); ``steady`` says whether there were enough of them.
    """
    if not models:
        raise ValueError("compare_latency needs at least one model")
    settings = RuntimeSettings(runtime, batch_size, threads, device)
    with torch_threads(threads), contextlib.ExitStack() as stack:
        if workdir is None and runtime == "onnxruntime":
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="torchslim-latency-"))
        functions = _timing_callables(models, input_size, settings, workdir, onnx_paths)
        timings = time_interleaved(functions, warmup=warmup, rounds=rounds)
    samples = {k: np.asarray(t.samples_ms, dtype=float) for k, t in timings.items()}
    base = samples[next(iter(models))]
    used, steady = steady_rounds(base)
    return LatencyComparison(
        **asdict(settings),
        median_ms={k: float(np.median(s[used])) for k, s in samples.items()},
        speedup={k: float(np.median(base[used] / s[used])) for k, s in samples.items()},
        rounds=rounds,
        samples_ms={k: list(t.samples_ms) for k, t in timings.items()},
        rounds_used=int(used.sum()),
        steady=steady,
    )


def in_fresh_process(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a newly spawned process, which inherits nothing from this one.

    For timing: a process in which ORT's profiler ran, or other models were timed, runs
    measurably slower (benchmarks/RESULTS.md).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()
