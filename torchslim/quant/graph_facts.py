"""Facts about an ONNX graph that quantization needs: is it already int8, what stayed fp32,
are its quantization scales usable."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from torchslim.errors import ModelError
from torchslim.export import create_session, session_options

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INT8_OPS = QDQ_OPS | {
    "QLinearConv",
    "QLinearMatMul",
    "QLinearAdd",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
}
# Ops that only move or reshape data: running them on float costs no arithmetic, so they are not
# reported as fallbacks.
LAYOUT_OPS = frozenset(
    {"Reshape", "Flatten", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Identity", "Constant"}
    | {"Transpose", "Slice", "Split", "Pad", "MaxPool", "NhwcMaxPool"}  # NhwcMaxPool: ORT's int8 max pool
)


def load_onnx(path) -> onnx.ModelProto:
    """The model at ``path``; a file that is not an ONNX model is a one-line ``ModelError`` naming it."""
    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise ModelError(f"ONNX model file not found: {path}") from None
    except Exception as error:  # protobuf's DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({' '.join(str(error).split())})") from None


def int8_ops(model: onnx.ModelProto) -> Counter:
    """Counts of the quantization op types in the graph (empty: a float model)."""
    return Counter(node.op_type for node in model.graph.node if node.op_type in INT8_OPS)


def refuse_quantized(model: onnx.ModelProto, where: str) -> None:
    found = int8_ops(model)
    if found:
        listing = ", ".join(f"{op} x{n}" for op, n in sorted(found.items()))
        raise ModelError(f"{where} is already quantized ({listing}); quantize its fp32 model instead")


@dataclass(frozen=True)
class Fallback:
    """A compute node ORT left in fp32: its input does not come from a DequantizeLinear."""

    node: str
    op_type: str


def _runs_int8(op_type: str) -> bool:
    """QLinear*/QGemm/QAttention (ORT's fused int8 kernels) and the integer ops."""
    return op_type in INT8_OPS or op_type.startswith("Q") or op_type.endswith("Integer")


def fp32_fallbacks(int8_path: Path) -> list[Fallback]:
    """The compute nodes ONNX Runtime still runs in fp32 after it has fused the QDQ model's
    DequantizeLinear-op-QuantizeLinear patterns into int8 kernels (read from the graph ORT
    optimises for this machine; data-movement ops are not counted)."""
    with tempfile.TemporaryDirectory(prefix="torchslim-ort-") as work:
        optimised = Path(work) / "optimised.onnx"
        options = session_options(1)
        options.optimized_model_filepath = str(optimised)
        create_session(int8_path, options)
        graph = onnx.load(str(optimised)).graph
    return [
        Fallback(node.name or node.output[0], node.op_type)
        for node in graph.node
        if not _runs_int8(node.op_type) and node.op_type not in LAYOUT_OPS
    ]


def bad_scales(model: onnx.ModelProto) -> list[str]:
    """Names of the QuantizeLinear scales that are NaN, inf or not positive (from non-finite ranges)."""
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    bad = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        scale = numpy_helper.to_array(initializers[node.input[1]])
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            bad.append(node.input[0])
    return bad
