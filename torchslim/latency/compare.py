"""The one timing path of torchslim: several models timed side by side (interleaved), one runtime
after the other, and their speedups.

``report``, ``demo``, ``infer`` and ``bench latency`` all time through :func:`time_runtimes`. Each
runtime gets a phase of its own: all its models interleaved round by round, with the same thread count
for every runtime. Before a phase starts, the previous phase's worker threads are given time to stop
spinning (PyTorch's OpenMP pool keeps spinning for a while after a parallel region, and would steal
the cores of an ONNX Runtime run timed right after it), and garbage is collected.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import math
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.export import export_onnx
from torchslim.export.executorch_export import export_executorch
from torchslim.export.pte import PteModel, require_executorch, set_executorch_threads
from torchslim.export.sessions import TimingSession
from torchslim.export.timing import ort_callable, time_interleaved, torch_callable, torch_threads
from torchslim.latency.machine import DEFAULT_THREADS, TIMING_RUNTIMES, check_runtime


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
    calls_per_round: int = 1  # each round's sample is the mean of this many consecutive calls
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
    models: dict[str, nn.Module], input_size: int, settings: RuntimeSettings, plan: TimingPlan
) -> dict[str, Callable[[], object]]:
    """A no-argument callable per model running one batch on the runtime (the files the plan names, or
    ONNX files and ExecuTorch programs exported into its ``workdir``)."""
    workdir, onnx_paths, example = plan.workdir, plan.onnx_paths, plan.example
    if example is None:
        shape = (settings.batch_size, 3, input_size, input_size)
        example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if settings.runtime == "eager":
        return {
            label: torch_callable(copy.deepcopy(model).eval(), example, device=settings.device)
            for label, model in models.items()
        }
    if settings.runtime == "executorch":
        return _executorch_callables(models, example, settings, workdir, plan.pte_paths)
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


def _executorch_callables(
    models: dict[str, nn.Module | None],
    example: torch.Tensor,
    settings: RuntimeSettings,
    workdir: str | os.PathLike | None,
    program_paths: dict[str, Path] | None,
) -> dict[str, Callable[[], object]]:
    """A callable per model running ``example`` in ExecuTorch: the ``.pte`` file given for it (when its
    batch matches), else a program exported for ``example``'s shape into ``workdir``, unverified."""
    require_executorch("timing on ExecuTorch")
    if settings.device != "cpu":
        raise ValueError("ExecuTorch (XNNPACK) runs on the CPU only")
    set_executorch_threads(settings.threads)
    given = {k: Path(p) for k, p in (program_paths or {}).items()}
    functions = {}
    for index, (label, model) in enumerate(models.items()):
        program = PteModel(given[label]) if label in given else None
        if program is None or program.input_shape != tuple(example.shape):
            if model is None or workdir is None:
                shape = tuple(example.shape)
                raise ValueError(f"{label}: no model and no ExecuTorch program of shape {shape}")
            path = Path(workdir) / f"model{index}.pte"
            export_executorch(copy.deepcopy(model).eval(), example, path, verify=False)
            program = PteModel(path)
        x = example.contiguous()
        functions[label] = lambda program=program, x=x: program.run_tensor(x)
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


# Seconds between two timing phases: long enough for idle OpenMP and ORT workers to stop spinning.
PHASE_SETTLE_S = 0.1
# A phase's timed rounds last at least this long in all (a round calls each model several times
# when one call is short), so a fast model's figure does not hang on a few milliseconds of machine.
PHASE_MIN_S = 0.5
MAX_CALLS_PER_ROUND = 1000


@contextlib.contextmanager
def quiet_phase() -> Iterator[None]:
    """Start a timing phase on a quiet process: garbage collected, the previous phase's spinning
    workers gone to sleep; no garbage collection pauses while it runs."""
    gc.collect()
    time.sleep(PHASE_SETTLE_S)
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class TimingPlan:
    """How many rounds to time, the example input (None: random, of the settings' batch size) and
    where ONNX files and ExecuTorch programs come from (``onnx_paths``, ``pte_paths``, else exported into
    ``workdir``)."""

    warmup: int = 5
    rounds: int = 30
    workdir: str | os.PathLike | None = None
    onnx_paths: dict[str, Path] | None = None
    example: torch.Tensor | None = None
    pte_paths: dict[str, Path] | None = None


def time_runtimes(
    models: dict[str, nn.Module | None],
    input_size: int,
    *,
    runtimes: Sequence[str] = ("onnxruntime",),
    batch_size: int = 1,
    threads: int = DEFAULT_THREADS,
    device: str = "cpu",
    warmup: int = 5,
    rounds: int = 30,
    workdir: str | os.PathLike | None = None,
    onnx_paths: dict[str, Path] | None = None,
    example: torch.Tensor | None = None,
    pte_paths: dict[str, Path] | None = None,
) -> dict[str, LatencyComparison]:
    """Time ``models`` on each of ``runtimes``, one phase per runtime, in that order; speedups are against
    the first model. Every runtime runs with ``threads`` intra-op threads (PyTorch's pool, ORT's
    ``intra_op_num_threads``, ExecuTorch's thread pool). ``example`` replaces the random input of
    ``batch_size`` images. On ONNX Runtime (ExecuTorch) a model whose file is in ``onnx_paths``
    (``pte_paths``, of the example's shape) is not used and may be None."""
    if not models:
        raise ValueError("time_runtimes needs at least one model")
    for runtime in runtimes:
        check_runtime(runtime, TIMING_RUNTIMES)
    if example is not None:
        batch_size = int(example.shape[0])
    plan = TimingPlan(warmup, rounds, workdir, onnx_paths, example, pte_paths)
    with torch_threads(threads), contextlib.ExitStack() as stack:
        if plan.workdir is None and {"onnxruntime", "executorch"} & set(runtimes):
            temporary = stack.enter_context(tempfile.TemporaryDirectory(prefix="torchslim-latency-"))
            plan = dataclasses.replace(plan, workdir=temporary)
        return {
            runtime: _time_phase(
                models, input_size, RuntimeSettings(runtime, batch_size, threads, device), plan
            )
            for runtime in runtimes
        }


def _time_phase(
    models: dict[str, nn.Module | None], input_size: int, settings: RuntimeSettings, plan: TimingPlan
) -> LatencyComparison:
    """One runtime's phase: its callables are built (ONNX export, sessions) before the phase goes quiet."""
    functions = _timing_callables(models, input_size, settings, plan)
    with quiet_phase():
        calls = calls_per_round(functions, plan.rounds, plan.warmup)
        timings = time_interleaved(functions, warmup=0, rounds=plan.rounds, calls_per_round=calls)
    del functions  # ORT sessions and model copies go before the next phase
    samples = {k: np.asarray(t.samples_ms, dtype=float) for k, t in timings.items()}
    base = samples[next(iter(models))]
    used, steady = steady_rounds(base)
    return LatencyComparison(
        **asdict(settings),
        median_ms={k: float(np.median(s[used])) for k, s in samples.items()},
        speedup={k: float(np.median(base[used] / s[used])) for k, s in samples.items()},
        rounds=plan.rounds,
        calls_per_round=calls,
        samples_ms={k: list(t.samples_ms) for k, t in timings.items()},
        rounds_used=int(used.sum()),
        steady=steady,
    )


def calls_per_round(functions: dict[str, Callable[[], object]], rounds: int, warmup: int) -> int:
    """How many calls of each function a round makes for ``rounds`` rounds to last :data:`PHASE_MIN_S`
    (at least 1, at most :data:`MAX_CALLS_PER_ROUND`), from one round timed after the warm-up rounds."""
    probe = time_interleaved(functions, warmup=warmup, rounds=1)
    one_round = max(sum(t.median_ms for t in probe.values()) / 1000.0, 1e-9)
    return max(1, min(MAX_CALLS_PER_ROUND, math.ceil(PHASE_MIN_S / (rounds * one_round))))


def compare_latency(
    models: dict[str, nn.Module | None],
    input_size: int,
    *,
    runtime: str = "onnxruntime",
    **options,
) -> LatencyComparison:
    """Time ``models`` interleaved on one ``runtime`` through :func:`time_runtimes` (same options).

    Medians and speedups come from the :func:`steady_rounds` (every model is timed in every round, so
    the first model's time says how fast the machine ran that round); ``steady`` says whether there
    were enough of them.
    """
    return time_runtimes(models, input_size, runtimes=(runtime,), **options)[runtime]


def in_fresh_process(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a newly spawned process, which inherits nothing from this one.

    For timing: a process in which ORT's profiler ran, or other models were timed, runs
    measurably slower (benchmarks/RESULTS.md).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()
