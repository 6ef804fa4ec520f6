"""The seed's results table: FLOPs, top-1/top-5, size, PyTorch and ONNX Runtime time."""

from __future__ import annotations

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
    models: dict[str, tuple[nn.Module, Path]], input_size: int, *, threads: int = 2, rounds: int = 30
) -> dict[str, LatencyComparison]:
    """Batch-1 latency of each model on ONNX Runtime and PyTorch eager through the one timing path,
    :func:`torchslim.latency.compare.time_runtimes`: one phase per runtime, the models interleaved."""
    return time_runtimes(
        {label: model.eval() for label, (model, _) in models.items()},
        input_size,
        runtimes=RUNTIMES,
        threads=threads,
        warmup=5,
        rounds=rounds,
        onnx_paths={label: path for label, (_, path) in models.items()},
    )


def fill_times(rows: dict[str, ResultRow], timings: dict[str, LatencyComparison]) -> None:
    """Put each model's medians and speedups from ``time_models`` into its row (keyed by model label)."""
    ort, eager = timings["onnxruntime"], timings["eager"]
    for label, row in rows.items():
        row.ort_ms, row.ort_speedup = ort.median_ms[label], ort.speedup[label]
        row.torch_ms, row.torch_speedup = eager.median_ms[label], eager.speedup[label]


def speedup_line(rows: list[ResultRow]) -> str:
    """One sentence with the last row's speedups over the first, as timed."""
    last = rows[-1]
    return (
        f"Speedup of {last.label} over {rows[0].label}: {last.ort_speedup:.2f}x on ONNX Runtime, "
        f"{last.torch_speedup:.2f}x in PyTorch eager (median of the per-round ratios)."
    )


def results_table(rows: list[ResultRow], *, markdown: bool = False) -> str:
    """The seed's table of ``rows``; MACs changes are against the first row."""
    cells = [row.cells(rows[0].macs) for row in rows]
    return (markdown_table if markdown else text_table)(HEADERS, cells, "lrrrrr")


def row_for(
    label: str, model: nn.Module, input_size: int, top1: float | None, top5: float | None
) -> ResultRow:
    profile = profile_model(model, input_size)
    return ResultRow(label, profile.macs, top1, top5, profile.size_bytes)
