"""Post-training static int8 quantization with ONNX Runtime: pre-processing, QDQ, per-channel weights.

The runtime that executes the model quantizes it: ``quant_pre_process`` first (shape inference and
graph optimisation; without it ORT's int8 model can be slower than fp32), then ``quantize_static`` with
QDQ nodes, per-channel int8 weights and activations calibrated on a fixed slice of training images;
the model's outputs stay float (:mod:`.float_outputs`).
The result is checked against fp32 on that slice and written only when every scale is usable.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from torchslim.errors import DataError, ModelError
from torchslim.export import create_session
from torchslim.quant.calibration import ArrayReader, batches, check_finite
from torchslim.quant.cpu_features import u8s8_can_saturate
from torchslim.quant.float_outputs import keep_outputs_float
from torchslim.quant.graph_facts import (
    bad_scales,
    fp32_fallbacks,
    load_onnx,
    refuse_quantized,
)

CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("int8", "uint8")
INT8_FILE = "model.int8.onnx"


@dataclass(frozen=True)
class PtqOptions:
    """How to quantize: calibration method and slice, per-channel weights, activation type."""

    calibrate_method: str = "minmax"
    calibration_images: int = 256
    per_channel: bool = True
    # uint8 activations with int8 weights (U8S8): ONNX Runtime's x86 kernels fuse every conv and add
    # in this format, while with int8 activations it left residual blocks' convs and adds in fp32
    activation_type: str = "uint8"
    percentile: float = 99.999
    preprocess: bool = True
    float_outputs: bool = True  # the model's outputs (logits) are not quantized: see float_outputs.py
    # 7-bit weights; None: where uint8 activations meet kernels that can saturate (x86 without VNNI)
    reduce_range: bool | None = None

    def weights_reduced(self) -> bool:
        if self.reduce_range is not None:
            return self.reduce_range
        return self.activation_type == "uint8" and u8s8_can_saturate()


@dataclass
class PtqReport:
    """What :func:`quantize_onnx` wrote and how close int8 stays to fp32 on the calibration slice."""

    path: str
    fp32_path: str
    calibrate_method: str
    calibration_images: int
    top1_agreement: float  # fraction of calibration images whose int8 top-1 equals fp32's
    max_logit_diff: float
    fp32_bytes: int
    int8_bytes: int
    fallback_ops: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    reduce_range: bool = False

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.fp32_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "size_ratio": self.size_ratio}

    def summary_line(self) -> str:
        fallbacks = describe_fallbacks_dicts(self.fallback_ops)
        return (
            f"int8 ({self.calibrate_method}, {self.calibration_images} images"
            + (", 7-bit weights: this CPU's uint8 x int8 kernels can saturate" if self.reduce_range else "")
            + f"): top-1 agreement with fp32 "
            f"{100 * self.top1_agreement:.1f}%, max logit diff {self.max_logit_diff:.4f}, size "
            f"{self.size_ratio:.2f}x of fp32; ops left fp32: {fallbacks}"
        )


def describe_fallbacks_dicts(items: list[dict[str, str]]) -> str:
    if not items:
        return "none"
    counts: dict[str, int] = {}
    for item in items:
        counts[item["op_type"]] = counts.get(item["op_type"], 0) + 1
    return ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))


def _ort_settings(options: PtqOptions):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    activation = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[options.activation_type]
    extra = {"CalibPercentile": options.percentile} if options.calibrate_method == "percentile" else {}
    return {
        "quant_format": QuantFormat.QDQ,
        "per_channel": options.per_channel,
        "weight_type": QuantType.QInt8,
        "activation_type": activation,
        "calibrate_method": methods[options.calibrate_method],
        "reduce_range": options.weights_reduced(),
        "extra_options": extra,
    }


def _logits(path: Path, images: np.ndarray) -> np.ndarray:
    session = create_session(path)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: part})[0] for part in batches(images)])


def _run_quantizer(source: Path, target: Path, images: np.ndarray, options: PtqOptions) -> None:
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = source  # ORT's pre-processing: shape inference and graph optimisation before calibration
    if options.preprocess:
        prepared = target.with_name("pre.onnx")
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    input_name = load_onnx(prepared).graph.input[0].name
    try:
        with contextlib.redirect_stdout(sys.stderr):  # ORT prints its calibration progress
            reader = ArrayReader(input_name, images)
            quantize_static(str(prepared), str(target), reader, **_ort_settings(options))
    except ValueError as error:
        if "finite" in str(error) or "nan" in str(error).lower():  # histogram calibrators, NaN/inf ranges
            raise DataError(
                f"calibration failed, activations are NaN or inf ({error}); nothing was written"
            ) from None
        raise ModelError(
            f"ONNX Runtime's {options.calibrate_method} calibration failed on {source}: {error}; "
            "nothing was written"
        ) from error
    if options.float_outputs:
        quantized = load_onnx(target)
        if keep_outputs_float(quantized):
            onnx.save(quantized, str(target))


def quantize_onnx(
    fp32_path: str | os.PathLike, int8_path: str | os.PathLike, images: np.ndarray, options: PtqOptions
) -> PtqReport:
    """Quantize the fp32 model at ``fp32_path`` into ``int8_path``, calibrated on ``images``.

    Refuses a model that is already quantized; raises ``DataError`` (nothing written) when the
    images or the activations they produce are not finite."""
    start = time.perf_counter()
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    refuse_quantized(load_onnx(fp32_path), f"ONNX model {fp32_path}")
    check_finite(images, "calibration images")
    reference = _logits(fp32_path, images)
    check_finite(reference, f"fp32 model {fp32_path} on the calibration images: its logits")
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=int8_path.parent, prefix=".quantize-") as work:
        staged = Path(work) / INT8_FILE
        _run_quantizer(fp32_path, staged, images, options)
        quantized = load_onnx(staged)
        broken = bad_scales(quantized)
        if broken:
            raise DataError(
                f"calibration gave non-finite or zero ranges for {', '.join(broken[:5])} "
                "(NaN/inf activations); nothing was written"
            )
        logits = _logits(staged, images)
        check_finite(logits, "int8 model logits on the calibration images")
        report = PtqReport(
            path=str(int8_path),
            fp32_path=str(fp32_path),
            calibrate_method=options.calibrate_method,
            calibration_images=len(images),
            top1_agreement=float(np.mean(logits.argmax(1) == reference.argmax(1))),
            max_logit_diff=float(np.max(np.abs(logits - reference))),
            fp32_bytes=fp32_path.stat().st_size,
            int8_bytes=staged.stat().st_size,
            fallback_ops=[{"node": f.node, "op_type": f.op_type} for f in fp32_fallbacks(staged)],
            reduce_range=options.weights_reduced(),
        )
        os.replace(staged, int8_path)
    report.seconds = time.perf_counter() - start
    return report


__all__ = [
    "ACTIVATION_TYPES",
    "CALIBRATE_METHODS",
    "INT8_FILE",
    "PtqOptions",
    "PtqReport",
    "quantize_onnx",
]
