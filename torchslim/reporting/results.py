"""The seed's results table: FLOPs, top-1/top-5, size, PyTorch and ONNX Runtime time."""

from __future__ import annotations

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
            functions[f"{label}/torch"] = torch_callable(model.eval(), example)
            functions[f"{label}/ort"] = ort_callable(TimingSession(onnx_path, threads), example.numpy())
        timings = time_interleaved(functions, warmup=5, rounds=rounds)
    return {
        label: (timings[f"{label}/torch"].median_ms, timings[f"{label}/ort"].median_ms) for label in models
    }


def results_table(rows: list[ResultRow], *, markdown: bool = False) -> str:
    """The seed's table of ``rows``; MACs changes are against the first row."""
    cells = [row.cells(rows[0].macs) for row in rows]
    return (markdown_table if markdown else text_table)(HEADERS, cells, "lrrrrr")


def row_for(
    label: str, model: nn.Module, input_size: int, top1: float | None, top5: float | None
) -> ResultRow:
    profile = profile_model(model, input_size)
    return ResultRow(label, profile.macs, top1, top5, profile.size_bytes)
