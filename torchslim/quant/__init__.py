"""int8 quantization: post-training static quantization with ONNX Runtime (:mod:`.ptq`) and
quantization-aware training with torch.export + torchao's PT2E flow (:mod:`.qat`)."""

from torchslim.quant.calibration import calibration_images
from torchslim.quant.graph_facts import INT8_OPS, int8_ops, load_onnx, refuse_quantized
from torchslim.quant.ptq import CALIBRATE_METHODS, INT8_FILE, PtqOptions, PtqReport, quantize_onnx

__all__ = [
    "CALIBRATE_METHODS",
    "INT8_FILE",
    "INT8_OPS",
    "PtqOptions",
    "PtqReport",
    "calibration_images",
    "int8_ops",
    "load_onnx",
    "quantize_onnx",
    "refuse_quantized",
]
