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
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.errors import ConfigError

RUNTIMES = ("onnxruntime", "eager")
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
    speedup: dict[str, float]  # label -> median of the per-round ratios base/label
    rounds: int
    samples_ms: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("samples_ms")
        return data


def _ort_session(path: Path, threads: int, device: str):
    from torchslim.export import OrtModel

    providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else None
    return OrtModel(path, threads=threads, providers=providers)


def export_for_timing(model: nn.Module, input_size: int, path: Path, *, verify: bool = False) -> Path:
    """An ONNX file of ``model`` (dynamic batch) for timing; ``verify`` checks it against PyTorch."""
    from torchslim.export import export_onnx

    example = torch.randn(1, 3, input_size, input_size)
    export_onnx(copy.deepcopy(model).cpu().float().eval(), example, path, verify=verify)
    return path


def make_callables(
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
    """A no-argument callable per model running one batch on ``runtime``."""
    from torchslim.export import ort_callable, torch_callable

    _check_runtime(runtime)
    example = torch.randn(batch_size, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    functions = {}
    if runtime == "eager":
        for label, model in models.items():
            functions[label] = torch_callable(copy.deepcopy(model).eval(), example, device=device)
        return functions
    workdir = Path(workdir or tempfile.mkdtemp(prefix="torchslim-latency-"))
    onnx_paths = dict(onnx_paths or {})
    for index, (label, model) in enumerate(models.items()):
        path = onnx_paths.get(label)
        if path is None:
            path = export_for_timing(model, input_size, workdir / f"model{index}.onnx", verify=verify)
        functions[label] = ort_callable(_ort_session(path, threads, device), example.numpy())
    return functions


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
    ``intra_op_num_threads=threads``. ``onnx_paths`` reuses exported files.
    """
    from torchslim.export import paired_speedup, time_interleaved, torch_threads

    if not models:
        raise ValueError("compare_latency needs at least one model")
    with torch_threads(threads):
        functions = make_callables(
            models, input_size, runtime=runtime, batch_size=batch_size, threads=threads, device=device,
            workdir=workdir, onnx_paths=onnx_paths,
        )  # fmt: skip
        timings = time_interleaved(functions, warmup=warmup, rounds=rounds)
    base = next(iter(models))
    return LatencyComparison(
        runtime=runtime,
        threads=threads,
        batch_size=batch_size,
        device=device,
        median_ms={k: t.median_ms for k, t in timings.items()},
        speedup={k: paired_speedup(timings[base], t) for k, t in timings.items()},
        rounds=rounds,
        samples_ms={k: list(t.samples_ms) for k, t in timings.items()},
    )


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

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def key(self) -> str:
        return (
            f"c{self.in_channels}x{self.out_channels}k{self.kernel}s{self.stride}g{self.groups}"
            f"h{self.height}w{self.width}b{self.batch}"
        )

    def with_channels(self, in_channels: int, out_channels: int) -> ConvConfig:
        groups = in_channels if self.depthwise else self.groups
        if self.depthwise:
            out_channels = in_channels
        return ConvConfig(in_channels, out_channels, self.kernel, self.stride, groups, self.height, self.width,
                          self.batch)  # fmt: skip

    def macs(self) -> int:
        out_h = (self.height + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1
        out_w = (self.width + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1
        return self.batch * out_h * out_w * self.out_channels * (self.in_channels // self.groups) * self.kernel**2


def layer_configs(model: nn.Module, input_size: int, batch: int = 1) -> dict[str, ConvConfig]:
    """Every conv and linear layer of ``model`` as a :class:`ConvConfig` (one forward pass on zeros)."""
    configs: dict[str, ConvConfig] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs, _output) -> None:
            x = inputs[0]
            if isinstance(module, nn.Conv2d):
                configs[name] = ConvConfig(
                    module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                    module.groups, int(x.shape[-2]), int(x.shape[-1]), batch,
                )  # fmt: skip
            elif isinstance(module, nn.Linear):
                configs[name] = ConvConfig(module.in_features, module.out_features, 1, 1, 1, 1, 1, batch)

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
    conv = nn.Conv2d(
        config.in_channels, config.out_channels, config.kernel, config.stride, config.kernel // 2,
        groups=config.groups, bias=True,
    )  # fmt: skip
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
        self.path = self.cache_dir / f"{self.version}-t{self.threads}-{digest}.json"
        self.entries: dict[str, float] = {}
        self.measured = 0  # new measurements made by this object
        self._unsaved = 0
        self._load()

    def _load(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if data.get("machine") == self.machine and data.get("runtime") == self.version:
                self.entries = {str(k): float(v) for k, v in data.get("entries", {}).items()}

    def save(self) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": "torchslim.latency-table/1",
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

    def _measure(self, config: ConvConfig) -> float:
        module = _layer_module(config).eval()
        example = torch.randn(config.batch, config.in_channels, config.height, config.width)
        if self.runtime == "eager":
            from torchslim.export import time_callable, torch_callable, torch_threads

            with torch_threads(self.threads):
                result = time_callable(torch_callable(module, example), warmup=self.warmup, runs=self.repeats)
            return result.median_ms
        return _measure_ort(module, example, self.threads, self.warmup, self.repeats)


def _measure_ort(module: nn.Module, example: torch.Tensor, threads: int, warmup: int, repeats: int) -> float:
    import io
    import warnings

    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["x"], output_names=["y"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": example.numpy()}
    for _ in range(warmup):
        session.run(None, feed)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feed)
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples)


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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        yield


def to_numpy(values: Iterable[float]) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float64)
