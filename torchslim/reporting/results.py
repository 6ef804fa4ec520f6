"""The seed's results table: FLOPs, top-1/top-5, size, PyTorch and ONNX Runtime time."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from torchslim.export import ort_callable, time_interleaved, torch_callable, torch_threads
from torchslim.export.sessions import TimingSession
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


def time_models(
    models: dict[str, tuple[nn.Module, Path]], input_size: int, *, threads: int = 2, rounds: int = 30
) -> dict[str, tuple[float, float]]:
    """Median batch-1 latency (PyTorch eager, ONNX Runtime) of each model, timed interleaved.

    ORT sessions do not spin between runs (see :class:`torchslim.export.sessions.TimingSession`)."""
    example = torch.randn(1, 3, input_size, input_size)
    functions = {}
    with torch_threads(threads):
        for label, (model, onnx_path) in models.items():
            if model is not None:  # None: an ONNX-only model (int8), timed in ONNX Runtime only
                functions[f"{label}/torch"] = torch_callable(model.eval(), example)
            functions[f"{label}/ort"] = ort_callable(TimingSession(onnx_path, threads), example.numpy())
        timings = time_interleaved(functions, warmup=5, rounds=rounds)
    torch_ms = {label: timings[f"{label}/torch"].median_ms for label in models if f"{label}/torch" in timings}
    return {label: (torch_ms.get(label), timings[f"{label}/ort"].median_ms) for label in models}


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
