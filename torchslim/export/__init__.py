"""Export pruned models to ONNX, run them with ONNX Runtime, and time inference."""

from torchslim.export.onnx_export import EXPORTERS, ExportReport, export_onnx, verify_onnx
from torchslim.export.ort import OrtModel, available_providers
from torchslim.export.timing import (
    TimingResult,
    interleaved_order,
    ort_callable,
    paired_speedup,
    speedup,
    time_callable,
    time_interleaved,
    torch_callable,
    torch_threads,
)

__all__ = [
    "EXPORTERS",
    "ExportReport",
    "OrtModel",
    "TimingResult",
    "available_providers",
    "export_onnx",
    "interleaved_order",
    "ort_callable",
    "paired_speedup",
    "speedup",
    "time_callable",
    "time_interleaved",
    "torch_callable",
    "torch_threads",
    "verify_onnx",
]
