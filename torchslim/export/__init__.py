"""Export pruned models to ONNX and ExecuTorch, run them with ONNX Runtime and ExecuTorch, and time
inference."""

from torchslim.export.executorch_export import PteExportReport, export_executorch
from torchslim.export.onnx_export import EXPORTERS, ExportReport, export_onnx, verify_onnx
from torchslim.export.ort import OrtModel
from torchslim.export.pte import PteModel, executorch_available
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
    "PteExportReport",
    "PteModel",
    "TimingResult",
    "TimingSession",
    "available_providers",
    "create_session",
    "executorch_available",
    "export_executorch",
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
