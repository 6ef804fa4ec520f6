"""The seed's results table: FLOPs, top-1/top-5, size, PyTorch and ONNX Runtime time."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from torchslim.latency.compare import LatencyComparison, time_runtimes
from torchslim.pruning.counting import human, profile_model
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

    def cells(self, base_macs: int) -> list[str]:
        change = "baseline" if self.macs == base_macs else f"-{1 - self.macs / base_macs:.0%}"
        accuracy = "-" if self.top1 is None else f"{self.top1:.2f}/{self.top5:.2f}"
        return [
            self.label,
            f"{human(self.macs)} ({change})",
            accuracy,
            human(self.size_bytes, "B"),
            "-" if self.torch_ms is None else f"{self.torch_ms:.3f}",
            "-" if self.ort_ms is None else f"{self.ort_ms:.3f}",
        ]


HEADERS = ["model", "MACs (FLOPs)", "top1/top5 %", "size", "PyTorch ms", "ONNX Runtime ms"]


RUNTIMES = ("onnxruntime", "eager")  # ONNX Runtime's phase first: the headline figure


def time_models(
    models: dict[str, tuple[nn.Module | None, Path]], input_size: int, *, threads: int = 2, rounds: int = 30
) -> dict[str, LatencyComparison]:
    """Batch-1 latency of each model on ONNX Runtime and PyTorch eager through the one timing path,
    :func:`torchslim.latency.compare.time_runtimes`: one phase per runtime, the models interleaved.
    A model given as None (an int8 ONNX file) is timed on ONNX Runtime only."""
    timings = {}
    for runtime in RUNTIMES:
        chosen = {label: m for label, m in models.items() if runtime == "onnxruntime" or m[0] is not None}
        timings.update(
            time_runtimes(
                {label: None if model is None else model.eval() for label, (model, _) in chosen.items()},
                input_size,
                runtimes=(runtime,),
                threads=threads,
                warmup=5,
                rounds=rounds,
                onnx_paths={label: path for label, (_, path) in chosen.items()},
            )
        )
    return timings


def fill_times(rows: dict[str, ResultRow], timings: dict[str, LatencyComparison]) -> None:
    """Put each model's medians and speedups from ``time_models`` into its row (keyed by model label);
    a model timed on ONNX Runtime only (int8) keeps no PyTorch figures."""
    ort, eager = timings["onnxruntime"], timings["eager"]
    for label, row in rows.items():
        row.ort_ms, row.ort_speedup = ort.median_ms[label], ort.speedup[label]
        row.torch_ms, row.torch_speedup = eager.median_ms.get(label), eager.speedup.get(label)


def speedup_line(rows: list[ResultRow]) -> str:
    """One sentence with every later row's speedups over the first, as timed."""
    parts = []
    for row in rows[1:]:
        eager = "" if row.torch_speedup is None else f", {row.torch_speedup:.2f}x in PyTorch eager"
        parts.append(f"{row.label} {row.ort_speedup:.2f}x on ONNX Runtime{eager}")
    return f"Speedup over {rows[0].label} (median of the per-round ratios): " + "; ".join(parts) + "."


def results_table(rows: list[ResultRow], *, markdown: bool = False) -> str:
    """The seed's table of ``rows``; MACs changes are against the first row."""
    cells = [row.cells(rows[0].macs) for row in rows]
    return (markdown_table if markdown else text_table)(HEADERS, cells, "lrrrrr")


def int8_row(fp32: ResultRow, int8_path: Path, record: dict) -> ResultRow:
    """The row of the int8 ONNX model of ``fp32``'s model: same MACs, its file size, its accuracy as
    recorded in quantization.json (``record``); no PyTorch time (it runs in ONNX Runtime only)."""
    return ResultRow(
        f"{fp32.label} + int8", fp32.macs, record.get("top1"), record.get("top5"), int8_path.stat().st_size
    )


CPU_FEATURES = {"VNNI": ("avx512_vnni", "avx_vnni"), "AVX-512": ("avx512f",), "AMX": ("amx_tile",)}


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
    flags = next(
        (set(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines() if line.startswith("flags")),
        set(),
    )
    features = ", ".join(
        f"{label} {'yes' if flags & set(names) else 'no'}" for label, names in CPU_FEATURES.items()
    )
    return f"CPU: {name or platform.machine()} ({os.cpu_count()} cores); {features}"


def row_for(
    label: str, model: nn.Module, input_size: int, top1: float | None, top5: float | None
) -> ResultRow:
    profile = profile_model(model, input_size)
    return ResultRow(label, profile.macs, top1, top5, profile.size_bytes)
