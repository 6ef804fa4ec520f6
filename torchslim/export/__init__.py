"""Export pruned models to ONNX, run them with ONNX Runtime, and time inference."""

from torchslim.export.onnx_export import EXPORTERS, ExportReport, export_onnx, verify_onnx
from torchslim.export.ort import OrtModel
from torchslim.export.sessions import TimingSession, available_providers, create_session, session_options
from torchslim.export.timing import (
    TimingResult,
    interleaved_order,
    ort_callable,
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
    "TimingSession",
    "available_providers",
    "create_session",
    "export_onnx",
    "interleaved_order",
    "ort_callable",
    "session_options",
    "speedup",
    "time_callable",
    "time_interleaved",
    "torch_callable",
    "torch_threads",
    "verify_onnx",
]
