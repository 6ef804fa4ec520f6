"""Latency as a first-class measurement: models timed side by side on a runtime, and a latency lookup table.

Two things live here:

* :func:`compare_latency` times several models (an unpruned one and its pruned
  variants) on ONNX Runtime or PyTorch eager, interleaved (A B A B ..., warm-up
  first, fixed threads) and reports medians and paired speedups. Shared machines
  drift; interleaving makes the *ratios* hold even when absolute times do not.
* :class:`LatencyTable` is a lookup table of measured latencies of single layers
  (a conv with its channel counts, kernel, stride, groups and input size) on one
  runtime, machine and thread count. It is built lazily (each configuration is
  measured the first time it is asked for) and cached as JSON under
  ``~/.cache/torchslim/latency`` (or ``$TORCHSLIM_CACHE``, or a given directory),
  so a model's per-layer costs are measured once per runtime and machine.
  :func:`estimate_latency` sums a model's layers from it, and
  :func:`fast_channel_counts` reads off which channel counts a layer runs fast
  at (the bottoms of the latency staircase), which is what latency-aware pruning
  aligns to.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.errors import ConfigError

RUNTIMES = ("onnxruntime", "eager")
TABLE_FORMAT = "torchslim.latency-table/2"  # 2: ORT entries are kernel times from its profiler
DEFAULT_THREADS = 2
CACHE_ENV = "TORCHSLIM_CACHE"


# --------------------------------------------------------------------------- model comparison


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


def ort_session_options(
    threads: int, *, spinning: bool = True, profile_prefix: str | os.PathLike | None = None
):
    """ONNX Runtime session options for timing: ``threads`` intra-op threads, all graph optimisations,
    sequential execution; workers spin within a run and stop when it returns (``spinning``, see
    :class:`TimingSession`) or never spin; ORT's profiler on when ``profile_prefix`` is given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = os.fspath(profile_prefix)
    return options


class TimingSession:
    """An ONNX Runtime session for timing: its worker threads spin during a run and stop when it returns.

    Interleaved timing keeps several sessions alive in one process. ORT's intra-op
    workers keep spin-waiting after each run by default, so the idle sessions'
    workers steal the cores of the one being timed: measured on 2 cores,
    MobileNetV1 at batch 1 took 11-30 ms with spinning (2-6 sessions) and 6.3 ms
    without. Turning spinning off altogether instead makes every node pay for
    waking the workers, a fixed cost that does not shrink with the model and so
    understates pruning's gain at batch 1 (MobileNetV2 -50% MACs: 7.3 -> 4.4 ms,
    1.67x). ``session.force_spinning_stop`` keeps spinning inside a run and stops
    it when the run returns: 6.8 -> 3.9 ms, 1.74x, each session alone on the
    cores, as in deployment (same machine, minutes apart; MobileNetV1 1.81x -> 1.89x).
    """

    def __init__(self, path: str | os.PathLike, threads: int, device: str = "cpu") -> None:
        import onnxruntime as ort

        options = ort_session_options(threads)
        providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise ConfigError(
                f"ONNX Runtime provider {missing[0]} is not available in this onnxruntime build"
            )
        self.session = ort.InferenceSession(os.fspath(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def _ort_session(path: Path, threads: int, device: str) -> TimingSession:
    return TimingSession(path, threads, device)


def export_for_timing(model: nn.Module, input_size: int, path: Path, *, verify: bool = False) -> Path:
    """An ONNX file of ``model`` (dynamic batch) for timing; ``verify`` checks it against PyTorch."""
    from torchslim.export import export_onnx

    example = torch.randn(1, 3, input_size, input_size)
    export_onnx(copy.deepcopy(model).cpu().float().eval(), example, path, verify=verify)
    return path


def _make_callables(
    models: dict[str, nn.Module],
    input_size: int,
    *,
    runtime: str = "onnxruntime",
    batch_size: int = 1,
    threads: int = DEFAULT_THREADS,
    device: str = "cpu",
    workdir: str | os.PathLike | None = None,
    onnx_paths: dict[str, Path] | None = None,
    verify: bool = False,
) -> dict[str, object]:
    """A no-argument callable per model running one batch on ``runtime`` (ONNX files go to ``workdir``)."""
    from torchslim.export import ort_callable, torch_callable

    _check_runtime(runtime)
    example = torch.randn(batch_size, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    functions = {}
    if runtime == "eager":
        for label, model in models.items():
            functions[label] = torch_callable(copy.deepcopy(model).eval(), example, device=device)
        return functions
    onnx_paths = dict(onnx_paths or {})
    if workdir is None and set(models) - set(onnx_paths):
        raise ValueError("a workdir is needed to export models for ONNX Runtime")
    for index, (label, model) in enumerate(models.items()):
        path = onnx_paths.get(label)
        if path is None:
            path = export_for_timing(model, input_size, Path(workdir) / f"model{index}.onnx", verify=verify)
        functions[label] = ort_callable(_ort_session(path, threads, device), example.numpy())
    return functions


# A round whose first (base) model took more than this times its fastest round ran while the machine was
# slowed down: on a shared 2-core host the same unpruned MobileNetV2 went from 3.9 to 6.45 ms a run for
# seconds to minutes, and pruned models lost more in that state (batch 8: 2.00x -> 1.73x).
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
    from torchslim.export import time_interleaved, torch_threads

    if not models:
        raise ValueError("compare_latency needs at least one model")
    with torch_threads(threads), contextlib.ExitStack() as stack:
        if workdir is None and runtime == "onnxruntime":
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="torchslim-latency-"))
        functions = _make_callables(
            models,
            input_size,
            runtime=runtime,
            batch_size=batch_size,
            threads=threads,
            device=device,
            workdir=workdir,
            onnx_paths=onnx_paths,
        )
        timings = time_interleaved(functions, warmup=warmup, rounds=rounds)
    samples = {k: np.asarray(t.samples_ms, dtype=float) for k, t in timings.items()}
    base = samples[next(iter(models))]
    used, steady = steady_rounds(base)
    return LatencyComparison(
        runtime=runtime,
        threads=threads,
        batch_size=batch_size,
        device=device,
        median_ms={k: float(np.median(s[used])) for k, s in samples.items()},
        speedup={k: float(np.median(base[used] / s[used])) for k, s in samples.items()},
        rounds=rounds,
        samples_ms={k: list(t.samples_ms) for k, t in timings.items()},
        rounds_used=int(used.sum()),
        steady=steady,
    )


def in_fresh_process(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a newly spawned process, which inherits nothing from this one.

    For timing: runs made in a process after ORT's profiler had run there, or after
    it had timed other models, were measurably slower (see benchmarks/latency.py).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")


# --------------------------------------------------------------------------- layer configurations


@dataclass(frozen=True)
class ConvConfig:
    """One conv (or linear, as a 1x1 conv on a 1x1 map) as the runtime sees it."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    height: int  # input spatial size
    width: int
    batch: int = 1
    linear: bool = False  # an nn.Linear (ONNX Gemm) on (batch, in_channels) rather than a conv

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def key(self) -> str:
        return (
            f"c{self.in_channels}x{self.out_channels}k{self.kernel}s{self.stride}g{self.groups}"
            f"h{self.height}w{self.width}b{self.batch}" + ("L" if self.linear else "")
        )

    def with_channels(self, in_channels: int, out_channels: int) -> ConvConfig:
        groups = in_channels if self.depthwise else self.groups
        if self.depthwise:
            out_channels = in_channels
        return ConvConfig(
            in_channels,
            out_channels,
            self.kernel,
            self.stride,
            groups,
            self.height,
            self.width,
            self.batch,
            self.linear,
        )

    def macs(self) -> int:
        out_h = (self.height + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1
        out_w = (self.width + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1
        return (
            self.batch
            * out_h
            * out_w
            * self.out_channels
            * (self.in_channels // self.groups)
            * self.kernel**2
        )


def layer_configs(model: nn.Module, input_size: int, batch: int = 1) -> dict[str, ConvConfig]:
    """Every conv and linear layer of ``model`` as a :class:`ConvConfig` (one forward pass on zeros)."""
    configs: dict[str, ConvConfig] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs, _output) -> None:
            x = inputs[0]
            if isinstance(module, nn.Conv2d):
                configs[name] = ConvConfig(
                    module.in_channels,
                    module.out_channels,
                    module.kernel_size[0],
                    module.stride[0],
                    module.groups,
                    int(x.shape[-2]),
                    int(x.shape[-1]),
                    batch,
                )
            elif isinstance(module, nn.Linear):
                configs[name] = ConvConfig(
                    module.in_features, module.out_features, 1, 1, 1, 1, 1, batch, linear=True
                )

        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return configs


def _layer_module(config: ConvConfig) -> nn.Module:
    if config.linear:
        return nn.Linear(config.in_channels, config.out_channels)
    conv = nn.Conv2d(
        config.in_channels,
        config.out_channels,
        config.kernel,
        config.stride,
        config.kernel // 2,
        groups=config.groups,
        bias=True,
    )
    return nn.Sequential(conv, nn.ReLU())


# --------------------------------------------------------------------------- the lookup table


def machine_fingerprint() -> str:
    """CPU model, core count and instruction-set flags that decide kernel choice, as one short string."""
    cpu = platform.processor() or platform.machine()
    flags = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "fma")
                flags = "+".join(f for f in line.split(":", 1)[1].split() if f in wanted)
                break
    return f"{cpu}|{os.cpu_count()}|{flags}"


def runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime-{onnxruntime.__version__}"
    return f"torch-{torch.__version__}"


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root) / "latency" if root else Path.home() / ".cache" / "torchslim" / "latency"


class LatencyTable:
    """Measured latencies (ms) of single layers on one runtime, machine and thread count.

    ``lookup(config)`` returns the cached median or measures it (``repeats``
    timed runs after a warm-up). ``save()`` writes the table atomically; it is
    also written every ``autosave`` new measurements. The file name carries the
    runtime version, thread count and a hash of the machine fingerprint, so a
    table is never reused on another machine or runtime.
    """

    def __init__(
        self,
        runtime: str = "onnxruntime",
        *,
        threads: int = DEFAULT_THREADS,
        cache_dir: str | os.PathLike | None = None,
        repeats: int = 15,
        warmup: int = 3,
        autosave: int = 50,
        measure: bool = True,
    ) -> None:
        _check_runtime(runtime)
        self.runtime = runtime
        self.threads = int(threads)
        self.repeats, self.warmup, self.autosave = repeats, warmup, autosave
        self.measure = measure
        self.machine = machine_fingerprint()
        self.version = runtime_version(runtime)
        digest = hashlib.sha1(self.machine.encode()).hexdigest()[:10]
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = self.cache_dir / f"{self.version}-t{self.threads}-{digest}-v2.json"
        self.entries: dict[str, float] = {}
        self.measured = 0  # new measurements made by this object
        self._unsaved = 0
        self._load()

    def _load(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if (data.get("machine"), data.get("runtime"), data.get("format")) == (
                self.machine,
                self.version,
                TABLE_FORMAT,
            ):
                self.entries = {str(k): float(v) for k, v in data.get("entries", {}).items()}

    def save(self) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": TABLE_FORMAT,
            "runtime": self.version,
            "threads": self.threads,
            "machine": self.machine,
            "unit": "ms",
            "entries": dict(sorted(self.entries.items())),
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(payload, indent=0))
        temporary.replace(self.path)
        self._unsaved = 0
        return self.path

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, config: ConvConfig) -> bool:
        return config.key() in self.entries

    def lookup(self, config: ConvConfig) -> float:
        key = config.key()
        if key not in self.entries:
            if not self.measure:
                raise KeyError(f"{key} is not in the latency table {self.path} and measuring is off")
            self.entries[key] = self._measure(config)
            self.measured += 1
            self._unsaved += 1
            if self._unsaved >= self.autosave:
                self.save()
        return self.entries[key]

    def lookup_many(self, configs: Iterable[ConvConfig]) -> list[float]:
        values = [self.lookup(c) for c in configs]
        if self._unsaved:
            self.save()
        return values

    def for_probes(self) -> LatencyTable:
        """The table block detection measures in: this runtime and machine on one thread.

        Which channel counts a kernel pads to does not depend on the thread count, and a
        single-threaded kernel is not stalled by a busy machine's scheduler the way a
        multi-threaded one is, so its staircase reads cleanly.
        """
        if self.threads == 1:
            return self
        return LatencyTable(
            self.runtime,
            threads=1,
            cache_dir=self.cache_dir,
            repeats=self.repeats,
            warmup=self.warmup,
            measure=self.measure,
        )

    def lookup_min(self, configs: list[ConvConfig], passes: int = 3) -> list[float]:
        """Like :meth:`lookup_many`, but configurations not yet in the table are measured in
        ``passes`` interleaved passes and the fastest pass is stored (for probes that must be
        comparable with each other on a busy machine)."""
        missing = [c for c in configs if c.key() not in self.entries]
        if missing and not self.measure:
            raise KeyError(f"{missing[0].key()} is not in the latency table {self.path} and measuring is off")
        best: dict[str, float] = {}
        for _ in range(passes if missing else 0):
            for config in missing:
                value = self._measure(config)
                best[config.key()] = min(value, best.get(config.key(), float("inf")))
        self.entries.update(best)
        self.measured += len(best)
        if best:
            self.save()
        return [self.entries[c.key()] for c in configs]

    def _measure(self, config: ConvConfig) -> float:
        module = _layer_module(config).eval()
        shape = (config.batch, config.in_channels) + (() if config.linear else (config.height, config.width))
        example = torch.randn(*shape)
        if self.runtime == "eager":
            from torchslim.export import time_callable, torch_callable, torch_threads

            with torch_threads(self.threads):
                result = time_callable(torch_callable(module, example), warmup=self.warmup, runs=self.repeats)
            return robust_ms(result.samples_ms)
        return _measure_ort(module, example, self.threads, self.warmup, self.repeats)


# Layout conversions ONNX Runtime adds around a lone conv (NCHW <-> its blocked NCHWc layout); inside a
# whole model the blocked layout flows from conv to conv and they are not there, so they are not counted.
_BOUNDARY_OPS = {"ReorderInput", "ReorderOutput"}


def _measure_ort(module: nn.Module, example: torch.Tensor, threads: int, warmup: int, repeats: int) -> float:
    """The layer's own kernel time in ONNX Runtime (ms), from ORT's profiler.

    A one-layer session also pays for the run call and for converting its input
    and output between NCHW and the blocked layout; a whole model pays neither
    per layer. So the per-node kernel times of the profile are summed, without
    the layout conversions, run by run; the table keeps a low quantile of them.
    """
    import io
    import warnings

    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["x"], output_names=["y"])
    with tempfile.TemporaryDirectory(prefix="torchslim-lut-") as workdir:
        options = ort_session_options(threads, spinning=False, profile_prefix=Path(workdir) / "layer")
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        feed = {"x": example.numpy()}
        for _ in range(warmup + repeats):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = _kernel_ms_per_run(events)[warmup:]
    return robust_ms(runs) if runs else 0.0


def _kernel_ms_per_run(events: list[dict]) -> list[float]:
    """Sum of node kernel times (ms) per ``model_run`` of an ORT profile, layout conversions excluded."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if not starts:
        return []
    totals = [0.0] * len(starts)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if event.get("args", {}).get("op_name") in _BOUNDARY_OPS:
            continue
        index = int(np.searchsorted(starts, event["ts"], side="right")) - 1
        if index >= 0:
            totals[index] += event.get("dur", 0) / 1000.0
    return totals


def robust_ms(samples: Iterable[float], quantile: float = 0.2) -> float:
    """A low quantile of timing samples: on a shared machine other processes only ever add time,
    so the fast end of the distribution is the layer's own cost and is stable run to run."""
    ordered = sorted(samples)
    return float(ordered[min(int(quantile * len(ordered)), len(ordered) - 1)])


# --------------------------------------------------------------------------- using the table


def estimate_latency(model: nn.Module, input_size: int, table: LatencyTable, batch: int = 1) -> float:
    """Sum of the table's latencies of ``model``'s conv and linear layers (ms)."""
    return float(sum(table.lookup_many(layer_configs(model, input_size, batch).values())))


def fast_channel_counts(latencies: dict[int, float], slack: float = 0.0) -> list[int]:
    """The channel counts worth keeping: those faster than every larger count.

    ``latencies`` maps channel count -> measured ms. A count is dropped when some
    larger count runs at most as fast (within ``slack``, a fraction): keeping more
    channels for the same time is free accuracy. What remains are the bottoms of
    the latency staircase, e.g. the multiples of the runtime's vector block.
    """
    counts = sorted(latencies)
    kept, best_above = [], float("inf")
    for count in reversed(counts):
        value = latencies[count]
        if value * (1.0 + slack) < best_above:
            kept.append(count)
        best_above = min(best_above, value)
    return sorted(kept)


BLOCK_CANDIDATES = (1, 4, 8, 16, 32)

# Probe layers whose latency staircase reveals the runtime's channel block, per layer kind:
# only one width varies, so the cost should be linear in that width rounded up to the block.
_PROBES = {
    "conv": lambda c: ConvConfig(64, c, 1, 1, 1, 56, 56),
    "depthwise": lambda c: ConvConfig(c, c, 3, 1, c, 56, 56),
    "linear": lambda c: ConvConfig(c, 4096, 1, 1, 1, 1, 1, batch=8, linear=True),
}


def block_from_latencies(latencies: dict[int, float]) -> int:
    """The channel block B that best explains ``latencies`` (count -> ms) as ``a + b * ceil(count / B) * B``.

    A runtime that pads channels to its vector block shows a staircase; a
    least-squares fit per candidate block picks the block whose staircase fits
    best (ties go to the smaller block). Returns 1 for a smooth curve.
    """
    counts = np.asarray(sorted(latencies), dtype=np.float64)
    values = np.asarray([latencies[int(c)] for c in counts], dtype=np.float64)
    best_block, best_error = 1, float("inf")
    for block in BLOCK_CANDIDATES:
        padded = np.ceil(counts / block) * block
        design = np.stack([np.ones_like(padded), padded], axis=1)
        keep = np.ones(len(values), dtype=bool)
        for _ in range(3):  # trimmed least squares: a few disturbed samples must not bend the line
            coefficients, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
            residuals = np.abs(design @ coefficients - values)
            keep = residuals <= np.quantile(residuals, 0.8)
        error = float(np.mean(np.sort(residuals)[: max(1, int(0.8 * len(residuals)))]))  # trimmed mean
        if error < best_error * 0.9 - 1e-12:
            best_block, best_error = block, error
    return best_block


def detect_blocks(
    table: LatencyTable, low: int = 64, high: int = 160, probe_step: int = 4, passes: int = 3
) -> dict[str, int]:
    """The channel block each layer kind ("conv", "depthwise", "linear") runs fast at on ``table``'s runtime.

    Measured once and cached in the table: a probe layer's latency at every
    ``probe_step``-th width in [low, high], in ``passes`` interleaved passes
    (the fastest pass per width counts, which shrugs off a busy machine), is
    read as a staircase by :func:`block_from_latencies`.
    """
    blocks = {}
    for kind, make in _PROBES.items():
        counts = list(range(low, high + 1, probe_step))
        values = table.lookup_min([make(c) for c in counts], passes=passes)
        blocks[kind] = block_from_latencies(dict(zip(counts, values, strict=True)))
    return blocks


def group_blocks(group_set, blocks: dict[str, int], model: nn.Module | None = None) -> dict[int, int]:
    """Per prunable group: the block its channel count should be a multiple of.

    A group's count is the output width of its source layers and the input width
    of its consumers and depthwise members, so the group takes the largest
    block of the layer kinds it touches (per-layer alignment, not one global
    round_to: a group feeding only a classifier may need none).
    """
    roles = {"consumer": None, "depthwise": "depthwise"}
    kinds_of_module = {}
    for use in group_set.graph.uses:
        if use.role in ("conv", "linear", "depthwise"):
            kinds_of_module[use.module] = use.role
    result = {}
    for group in group_set.prunable():
        kinds = {kinds_of_module.get(name, "conv") for name in group.sources}
        for role, kind in roles.items():
            for name in group.members.get(role, []):
                kinds.add(kind or kinds_of_module.get(name, "conv"))
        result[group.index] = max((blocks.get(k, 1) for k in kinds), default=1)
    return result


def allowed_counts(sizes: dict[int, int], block_of: dict[int, int]) -> dict[int, np.ndarray]:
    """Multiples of each group's block (at least one block), plus the full size."""
    allowed = {}
    for group, size in sizes.items():
        block = max(1, block_of.get(group, 1))
        values = list(range(block, size + 1, block)) or [size]
        allowed[group] = np.asarray(sorted(set(values) | {size}), dtype=np.int64)
    return allowed


class LatencyModel:
    """Estimated latency of a pruning plan: the table's latency of each layer at the plan's channel counts.

    Works on shapes only (the traced channel graph and a removal mask), like
    MAC counting, so trying a plan costs a dictionary lookup per layer once the
    table holds its configurations.
    """

    def __init__(
        self, group_set, model: nn.Module, input_size: int, table: LatencyTable, batch: int = 1
    ) -> None:
        self.group_set = group_set
        self.table = table
        self.configs = layer_configs(model, input_size, batch)
        self.uses = [
            u
            for u in group_set.graph.uses
            if u.role in ("conv", "linear", "depthwise", "fixed") and u.module in self.configs
        ]

    def _kept(self, ids: np.ndarray, mask: np.ndarray) -> int:
        return int((~mask[self.group_set.roots[ids]]).sum())

    def layer_configs(self, mask: np.ndarray) -> dict[str, ConvConfig]:
        configs = {}
        for use in self.uses:
            base = self.configs[use.module]
            if use.role == "fixed":
                configs[use.module] = base
                continue
            cin = self._kept(use.in_ids, mask) if use.in_ids is not None else base.in_channels
            cout = cin if use.role == "depthwise" else self._kept(use.out_ids, mask)
            configs[use.module] = base.with_channels(max(cin, 1), max(cout, 1))
        return configs

    def estimate(self, mask: np.ndarray) -> float:
        return float(sum(self.table.lookup(c) for c in self.layer_configs(mask).values()))

    def base(self) -> float:
        return self.estimate(np.zeros(len(self.group_set.roots), dtype=bool))


def minimize_latency(
    builder,
    model_latency: LatencyModel,
    plan,
    target: float,
    tolerance: float = 0.01,
    *,
    spread: float = 0.25,
    max_moves: int = 200,
):
    """Trade channels between groups to lower the estimated latency at (nearly) the same MACs.

    Greedy exchange: each move takes one allowed step off one group and gives
    one step to another (or takes a single step when that alone stays within
    ``tolerance / 2`` of the MACs ``target``), or takes one step off a group and
    gives back its MACs in single steps to the groups that add the least time
    per MAC (a step on a wide group can hold more MACs than any one step
    elsewhere), keeping the move that saves the most estimated time. Each
    group's kept fraction stays within ``spread`` of where ``plan`` put it, so
    accuracy is not traded away for speed.
    """
    start = dict(plan.keep)
    bounds = {
        g: (
            max(1, int((k / builder.sizes[g] - spread) * builder.sizes[g])),
            int((k / builder.sizes[g] + spread) * builder.sizes[g]),
        )
        for g, k in start.items()
    }
    current, current_ms = plan, model_latency.estimate(plan.mask)
    for _ in range(max_moves):
        singles = []
        for group, kept in current.keep.items():
            for direction in (-1, 1):
                count = builder.step(group, kept, direction)
                if count is None or not bounds[group][0] <= count <= bounds[group][1]:
                    continue
                candidate = builder.build({**current.keep, group: count})
                singles.append((group, count, candidate, model_latency.estimate(candidate.mask)))
        best, best_ms = None, current_ms
        for _, _, candidate, ms in singles:  # a single step that stays on target
            if abs(candidate.reduction - target) <= tolerance / 2 and ms < best_ms:
                best, best_ms = candidate, ms
        downs = sorted((s for s in singles if s[1] < current.keep[s[0]]), key=lambda s: s[3])[:8]
        ups = sorted((s for s in singles if s[1] > current.keep[s[0]]), key=lambda s: s[3])[:8]
        for down in downs:  # pair the most time-saving removals with the cheapest additions
            for up in ups:
                if down[0] == up[0]:
                    continue
                candidate = builder.build({**current.keep, down[0]: down[1], up[0]: up[1]})
                if abs(candidate.reduction - target) > tolerance / 2:
                    continue
                ms = model_latency.estimate(candidate.mask)
                if ms < best_ms:
                    best, best_ms = candidate, ms
        for candidate in _filled_moves(builder, current, current_ms, singles, downs, target, tolerance):
            ms = model_latency.estimate(candidate.mask)
            if ms < best_ms:
                best, best_ms = candidate, ms
        if best is None or best_ms >= current_ms * (1.0 - 1e-4):
            break
        current, current_ms = best, best_ms
    return current


def _filled_moves(builder, current, current_ms: float, singles, downs, target: float, tolerance: float):
    """For each removal in ``downs``: the plan that then adds single up-steps, cheapest estimated time per
    MAC first, until the MACs reduction is back within ``tolerance / 2`` of ``target``."""
    ups = []
    for group, count, candidate, ms in singles:
        added = current.reduction - candidate.reduction  # fraction of MACs the step gives back
        if count > current.keep[group] and added > 0:
            ups.append(((ms - current_ms) / added, group, count, added))
    ups.sort()
    for group, count, removed, _ in downs:
        keep, candidate = {**current.keep, group: count}, removed
        for _, up_group, up_count, added in ups:
            if candidate.reduction <= target + tolerance / 2:
                break
            if up_group == group or candidate.reduction - added < target - tolerance / 2 - added / 4:
                continue  # would overshoot (steps interact, so a quarter step of slack before building)
            trial = builder.build({**keep, up_group: up_count})
            if trial.reduction >= target - tolerance / 2:
                keep, candidate = {**keep, up_group: up_count}, trial
        if abs(candidate.reduction - target) <= tolerance / 2:
            yield candidate


def search_latency(builder, model_latency: LatencyModel, target: float, tolerance: float = 0.01):
    """One ratio for all groups, bisected so that the *estimated latency* drops by ``target`` (a fraction)."""
    from torchslim.errors import PruningError

    base_ms = model_latency.base()

    def plan_for(ratio: float):
        return builder.build({g: builder.aligned(g, n * (1.0 - ratio)) for g, n in builder.sizes.items()})

    def reduction(plan) -> float:
        return 1.0 - model_latency.estimate(plan.mask) / base_ms

    most = builder.smallest()
    if reduction(most) < target - tolerance:
        raise PruningError(
            f"latency target {target:.2%} is unreachable: removing everything allowed saves only "
            f"{reduction(most):.2%} of the estimated latency"
        )
    low, high = 0.0, 1.0
    best, best_error = plan_for(0.0), abs(reduction(plan_for(0.0)) - target)
    for _ in range(30):
        middle = (low + high) / 2
        plan = plan_for(middle)
        value = reduction(plan)
        if abs(value - target) < best_error:
            best, best_error = plan, abs(value - target)
        if value < target:
            low = middle
        else:
            high = middle
        if best_error <= tolerance / 4:
            break
    return best


@dataclass
class LatencyPlanInfo:
    """What latency-aware planning decided and expects."""

    runtime: str
    threads: int
    batch_size: int
    blocks: dict[str, int]
    estimated_base_ms: float
    estimated_uniform_ms: float | None
    estimated_ms: float
    table_path: str
    table_entries: int
    measured: int  # layer configurations measured now (not found in the cache)
    calibration: dict | None = None  # whole-model profiles (torchslim.latency_calibration), when calibrated

    @property
    def estimated_speedup(self) -> float:
        return self.estimated_base_ms / self.estimated_ms if self.estimated_ms > 0 else float("inf")

    def as_dict(self) -> dict:
        data = asdict(self)
        data["estimated_speedup"] = self.estimated_speedup
        return data


def prune_for_latency(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    target_flops: float | None = None,
    latency_target: float | None = None,
    runtime: str = "onnxruntime",
    threads: int = DEFAULT_THREADS,
    batch_size: int = 1,
    criterion: str = "l1_norm",
    pruned_params: str | None = None,
    aliases: dict[str, str] | None = None,
    align: str | int = "auto",
    spread: float = 0.25,
    table: LatencyTable | None = None,
    cache_dir: str | os.PathLike | None = None,
    inplace: bool = False,
    verify: bool = False,
    tolerance: float = 0.01,
    calibrate: bool | None = None,
    score: Callable[[nn.Module], float] | None = None,
    speed_slack: float = 0.02,
):
    """Latency-aware pruning: channel counts the runtime runs fast, and time taken where it is cheapest.

    * ``align="auto"``: each group's count is a multiple of the channel block its
      layers run fast at on ``runtime`` (read off measured latency staircases;
      e.g. 16 for ONNX Runtime's NCHWc kernels on AVX-512, 8 on AVX2); an int
      is a fixed block for all groups (like ``round_to``).
    * ``target_flops``: MACs drop by this fraction (within ``tolerance``), and
      among such plans channels are traded between groups to minimise the
      latency estimated from the table (each group stays within ``spread`` of
      the uniform ratio).
    * ``latency_target``: the estimated latency drops by this fraction. With
      both targets both must hold: the plan removes whichever is more.

    Layer latencies come from a :class:`LatencyTable` (measured once per
    runtime, machine and thread count, cached). ``calibrate`` (default: on for
    ONNX Runtime with a MACs target) scales them to what each layer costs inside
    this model, from profiles of whole pruned models, and keeps the profiled plan
    that measured fastest (:mod:`torchslim.latency_calibration`; a few seconds
    per profiled plan). ``score(pruned_copy) -> float`` (higher is better, e.g.
    top-1 after BN re-estimation on a validation slice) makes the choice weigh
    accuracy: the best-scoring profiled plan within ``speed_slack`` of the
    fastest wins (needs calibration: without it there is one plan). Returns the same
    :class:`~torchslim.pruner.PruneResult` as :func:`torchslim.prune`, with
    ``result.latency`` (a :class:`LatencyPlanInfo`) added.
    """
    from torchslim.errors import PruningError
    from torchslim.plan import PlanBuilder, search_uniform
    from torchslim.pruner import analyze, cut, rank_units

    if target_flops is None and latency_target is None:
        raise PruningError("give target_flops, latency_target or both")
    for name, value in (("target_flops", target_flops), ("latency_target", latency_target)):
        if value is not None and not 0.0 < value < 1.0:
            raise PruningError(f"{name} must be in (0, 1), got {value}")
    started = time.perf_counter()
    if table is None:
        table = LatencyTable(runtime, threads=threads, cache_dir=cache_dir)
    measured_before = table.measured
    group_set = analyze(model, example_input, pruned_params, aliases)
    scores = rank_units(group_set, model, criterion)
    order = {g: np.argsort(s, kind="stable") for g, s in scores.items()}
    sizes = {g: len(o) for g, o in order.items()}
    if align == "auto":
        blocks = detect_blocks(table.for_probes())
        allowed = allowed_counts(sizes, group_blocks(group_set, blocks))
    else:
        blocks = {"all": int(align)}
        allowed = allowed_counts(sizes, dict.fromkeys(sizes, int(align)))
    builder = PlanBuilder(group_set, order, max(blocks.values()), allowed=allowed)
    input_size = int(example_input.shape[-1])
    latency_model = LatencyModel(group_set, model, input_size, table, batch_size)
    base_ms = latency_model.base()
    uniform_ms = None
    plan = None
    calibration = None
    calibration_error = None
    if target_flops is not None:
        plan = search_uniform(builder, target_flops, tolerance)
        uniform_ms = latency_model.estimate(plan.mask)
        if calibrate is None:
            calibrate = runtime == "onnxruntime"
        if calibrate:
            from torchslim.latency_calibration import CalibrationError, calibrated_minimize

            uniform = plan
            try:
                plan, latency_model, calibration = calibrated_minimize(
                    builder,
                    latency_model,
                    model,
                    uniform,
                    target_flops,
                    tolerance,
                    spread=spread,
                    input_size=input_size,
                    batch=batch_size,
                    threads=table.threads,
                    score=score,
                    speed_slack=speed_slack,
                )
                base_ms, uniform_ms = latency_model.base(), latency_model.estimate(uniform.mask)  # calibrated
            except CalibrationError as error:  # said, recorded, and planned from the table alone
                warnings.warn(f"latency calibration skipped: {error}", stacklevel=2)
                calibration_error = str(error)
                calibrate = False
        if not calibrate:
            plan = minimize_latency(builder, latency_model, plan, target_flops, tolerance, spread=spread)
    if latency_target is not None:
        reached = (
            plan is not None
            and 1.0 - latency_model.estimate(plan.mask) / base_ms >= latency_target - tolerance
        )
        if not reached:
            plan = search_latency(builder, latency_model, latency_target, tolerance)
    if score is not None and calibration is None:
        warnings.warn(
            "the plan score was not used: only a calibrated MACs-target plan has measured "
            "alternatives to choose from",
            stacklevel=2,
        )
    table.save()
    result = cut(model, group_set, plan, example_input, inplace=inplace, verify=verify, started=started)
    result.latency = LatencyPlanInfo(
        runtime=runtime,
        threads=table.threads,
        batch_size=batch_size,
        blocks=blocks,
        estimated_base_ms=base_ms,
        estimated_uniform_ms=uniform_ms,
        estimated_ms=latency_model.estimate(plan.mask),
        table_path=str(table.path),
        table_entries=len(table),
        measured=table.measured - measured_before,
        calibration=(
            {"error": calibration_error}
            if calibration_error
            else None
            if calibration is None
            else {**asdict(calibration), "measured_speedup": calibration.measured_speedup}
        ),
    )
    return result


def prune_as_configured(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    target_flops: float,
    pruner,
    strategy,
    criterion: str,
    aliases: dict[str, str] | None = None,
    inplace: bool = True,
    score: Callable[[nn.Module], float] | None = None,
):
    """What a pruning strategy calls: :func:`torchslim.prune`, or :func:`prune_for_latency` when the
    pruner config says ``align: latency`` or the strategy sets ``latency_target`` (``score``, when
    given, weighs accuracy among the measured plans within the pruner's ``latency_speed_slack``)."""
    latency_target = getattr(strategy, "latency_target", None)
    if getattr(pruner, "align", "round_to") == "latency" or latency_target is not None:
        return prune_for_latency(
            model,
            example_input,
            target_flops=target_flops,
            latency_target=latency_target,
            runtime=getattr(pruner, "runtime", "onnxruntime"),
            criterion=criterion,
            pruned_params=strategy.pruned_params,
            aliases=aliases,
            inplace=inplace,
            score=score,
            speed_slack=getattr(pruner, "latency_speed_slack", 0.02),
        )
    from torchslim.pruner import prune

    return prune(
        model,
        example_input,
        target_flops=target_flops,
        criterion=criterion,
        pruned_params=strategy.pruned_params,
        round_to=pruner.round_to,
        global_ranking=pruner.global_ranking,
        aliases=aliases,
        inplace=inplace,
    )
