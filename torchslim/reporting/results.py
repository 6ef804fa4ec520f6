"""The seed's results table: FLOPs, top-1/top-5, size, PyTorch and ONNX Runtime time, and ExecuTorch
time (the seed's lightweight-runtime column, on PyTorch) whenever the executorch extra is installed."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from torchslim.export.pte import PteModel, executorch_available
from torchslim.latency.compare import LatencyComparison, time_runtimes
from torchslim.pruning.counting import human, profile_model
from torchslim.quant.cpu_features import VNNI_FLAGS, cpu_flags
from torchslim.reporting.tables import markdown_table, text_table


@dataclass
class ResultRow:
    label: str
    macs: int
    top1: float | None
    top5: float | None
    size_bytes: int
    torch_ms: float | None = None
    ort_ms: float | None = None
    torch_speedup: float | None = None  # against the first model timed, median of per-round ratios
    ort_speedup: float | None = None
    executorch_ms: float | None = None
    executorch_speedup: float | None = None

    def cells(self, base_macs: int, executorch: bool = False) -> list[str]:
        change = "baseline" if self.macs == base_macs else f"-{1 - self.macs / base_macs:.0%}"
        accuracy = "-" if self.top1 is None else f"{self.top1:.2f}/{self.top5:.2f}"
        return [
            self.label,
            f"{human(self.macs)} ({change})",
            accuracy,
            human(self.size_bytes, "B"),
            "-" if self.torch_ms is None else f"{self.torch_ms:.3f}",
            "-" if self.ort_ms is None else f"{self.ort_ms:.3f}",
        ] + (["-" if self.executorch_ms is None else f"{self.executorch_ms:.3f}"] if executorch else [])


HEADERS = ["model", "MACs (FLOPs)", "top1/top5 %", "size", "PyTorch ms", "ONNX Runtime ms"]
EXECUTORCH_HEADER = "ExecuTorch ms"


RUNTIMES = ("onnxruntime", "eager")  # ONNX Runtime's phase first: the headline figure


def time_models(
    models: dict[str, tuple[nn.Module | None, Path]],
    input_size: int,
    *,
    threads: int = 2,
    rounds: int = 30,
    pte_paths: dict[str, Path] | None = None,
    executorch: bool | None = None,
) -> dict[str, LatencyComparison]:
    """Batch-1 latency of each model on ONNX Runtime, PyTorch eager and (``executorch``; None: whenever
    the extra is installed) ExecuTorch through the one timing path,
    :func:`torchslim.latency.compare.time_runtimes`: one phase per runtime, the models interleaved.

    A model given as None (an int8 ONNX file) is timed on ONNX Runtime, and on ExecuTorch when
    ``pte_paths`` has a batch-1 program of it (``model.int8.pte``). A model with a module is timed on
    ExecuTorch from its batch-1 program in ``pte_paths``, else from one exported for the timing."""
    executorch = executorch_available() if executorch is None else executorch
    programs = batch_one_programs(pte_paths or {}, input_size) if executorch else {}
    timings = {}
    for runtime in RUNTIMES + (("executorch",) if executorch else ()):
        chosen = {
            label: m
            for label, m in models.items()
            if runtime == "onnxruntime" or m[0] is not None or (runtime == "executorch" and label in programs)
        }
        timings.update(
            time_runtimes(
                {label: None if model is None else model.eval() for label, (model, _) in chosen.items()},
                input_size,
                runtimes=(runtime,),
                threads=threads,
                warmup=5,
                rounds=rounds,
                onnx_paths={label: path for label, (_, path) in chosen.items()},
                pte_paths={label: path for label, path in programs.items() if label in chosen},
            )
        )
    return timings


def batch_one_programs(pte_paths: dict[str, Path], input_size: int) -> dict[str, Path]:
    """The ExecuTorch programs of ``pte_paths`` that exist and take one image of ``input_size``, the
    shape the table is timed at (ExecuTorch programs have a fixed input shape)."""
    shape = (1, 3, input_size, input_size)
    return {
        label: Path(path)
        for label, path in pte_paths.items()
        if Path(path).is_file() and PteModel(path).input_shape == shape
    }


def fill_times(rows: dict[str, ResultRow], timings: dict[str, LatencyComparison]) -> None:
    """Put each model's medians and speedups from ``time_models`` into its row (keyed by model label);
    a model timed on ONNX Runtime only (int8) keeps no PyTorch figures, one not timed on ExecuTorch no
    ExecuTorch figures."""
    ort, eager = timings["onnxruntime"], timings["eager"]
    executorch = timings.get("executorch")
    for label, row in rows.items():
        row.ort_ms, row.ort_speedup = ort.median_ms[label], ort.speedup[label]
        row.torch_ms, row.torch_speedup = eager.median_ms.get(label), eager.speedup.get(label)
        if executorch is not None:
            row.executorch_ms = executorch.median_ms.get(label)
            row.executorch_speedup = executorch.speedup.get(label)


def speedup_line(rows: list[ResultRow]) -> str:
    """One sentence with every later row's speedups over the first, as timed."""
    parts = []
    for row in rows[1:]:
        eager = "" if row.torch_speedup is None else f", {row.torch_speedup:.2f}x in PyTorch eager"
        executorch = (
            "" if row.executorch_speedup is None else f", {row.executorch_speedup:.2f}x in ExecuTorch"
        )
        parts.append(f"{row.label} {row.ort_speedup:.2f}x on ONNX Runtime{eager}{executorch}")
    return f"Speedup over {rows[0].label} (median of the per-round ratios): " + "; ".join(parts) + "."


def results_table(rows: list[ResultRow], *, markdown: bool = False, executorch: bool | None = None) -> str:
    """The seed's table of ``rows``; MACs changes are against the first row. ``executorch``: with the
    ExecuTorch column (None: whenever the extra is installed)."""
    executorch = executorch_available() if executorch is None else executorch
    headers = HEADERS + ([EXECUTORCH_HEADER] if executorch else [])
    cells = [row.cells(rows[0].macs, executorch) for row in rows]
    return (markdown_table if markdown else text_table)(headers, cells, "l" + "r" * (len(headers) - 1))


def int8_row(fp32: ResultRow, int8_path: Path, record: dict) -> ResultRow:
    """The row of the int8 ONNX model of ``fp32``'s model: same MACs, its file size, its accuracy as
    recorded in quantization.json (``record``); no PyTorch time (it runs in ONNX Runtime, and in
    ExecuTorch where a ``model.int8.pte`` was written beside it)."""
    return ResultRow(
        f"{fp32.label} + int8", fp32.macs, record.get("top1"), record.get("top5"), int8_path.stat().st_size
    )


CPU_FEATURES = {"VNNI": VNNI_FLAGS, "AVX-512": ("avx512f",), "AMX": ("amx_tile",)}


def cpu_caption(cpuinfo: str | None = None) -> str:
    """``CPU: <model> (N cores); VNNI no, AVX-512 no, AMX no`` from /proc/cpuinfo: int8 speed depends
    on these instructions, so every table with int8 timings names them."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    name = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), ""
    )
    flags = cpu_flags(cpuinfo)
    features = ", ".join(
        f"{label} {'yes' if flags & set(names) else 'no'}" for label, names in CPU_FEATURES.items()
    )
    return f"CPU: {name or platform.machine()} ({os.cpu_count()} cores); {features}"


def row_for(
    label: str, model: nn.Module, input_size: int, top1: float | None, top5: float | None
) -> ResultRow:
    profile = profile_model(model, input_size)
    return ResultRow(label, profile.macs, top1, top5, profile.size_bytes)
