"""``quantize``: ONNX Runtime static int8 quantization of any saved model (or fp32 ``.onnx`` file)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from torchslim.data import build_datasets
from torchslim.errors import DataError, ModelError
from torchslim.models import load_model
from torchslim.quant import (
    CALIBRATE_METHODS,
    INT8_FILE,
    PtqOptions,
    PtqReport,
    calibration_images,
    load_onnx,
    quantize_onnx,
    refuse_quantized,
)
from torchslim.quant.saved import FP32_FILE, RECORD_FILE, quantize_model, write_record

from . import flags
from .artifacts import eval_model_dir, onnx_file
from .common import add_command, data_help
from .output import emit_json, log


def add_parsers(subparsers) -> None:
    parser = add_command(
        subparsers,
        "quantize",
        run_quantize,
        help="Quantize a saved model to int8 with ONNX Runtime (static, QDQ, per-channel weights).",
        description="Write OUTPUT/model.int8.onnx (and the fp32 model.onnx and saved model beside it): "
        "ONNX Runtime's pre-processing, then static quantization with QDQ nodes and int8 weights, the "
        "activations calibrated on the first --calibration-images training images of --data. The int8 "
        "model is checked against fp32 on those images (top-1 agreement, max logit difference); ops "
        "ONNX Runtime runs in fp32 are listed.",
    )
    parser.add_argument(
        "--model-path",
        "--model_path",
        dest="model_path",
        required=True,
        help="A saved model directory, a checkpoint (its newest eval model), or an fp32 .onnx file.",
    )
    parser.add_argument(
        "--model", help="For models built by your own factory (file.py:factory): name it to trust its code."
    )
    parser.add_argument("--data", help=data_help("; its training images calibrate the activations."))
    parser.add_argument("--output", required=True, type=flags.output_dir, help="Folder to write into.")
    parser.add_argument(
        "--calibration-images",
        type=flags.positive_int,
        default=256,
        help="Training images to calibrate on (default 256).",
    )
    parser.add_argument(
        "--calibrate-method", choices=CALIBRATE_METHODS, default="minmax", help="Default minmax."
    )
    parser.add_argument(
        "--per-tensor", action="store_true", help="One weight scale per tensor, not per channel."
    )
    parser.add_argument(
        "--activation-type",
        choices=("int8", "uint8"),
        default="uint8",
        help="Default uint8 (ORT's x86 kernels).",
    )


def _calibration(args: argparse.Namespace, size: int | None):
    train, _, _, _ = build_datasets(args.data, image_size=size)
    return calibration_images(train, args.calibration_images, source=f"--data {args.data} (training split)")


def _quantize_into(args: argparse.Namespace, staging: Path, options: PtqOptions) -> PtqReport:
    if str(args.model_path).endswith(".onnx"):
        source = onnx_file(args.model_path)
        refuse_quantized(load_onnx(source), f"ONNX model {source}")
        shutil.copyfile(source, staging / FP32_FILE)
        dims = [d.dim_value for d in _input_dims(staging / FP32_FILE)]
        images = _calibration(args, dims[-1] or None)
        return quantize_onnx(staging / FP32_FILE, staging / INT8_FILE, images, options)
    directory = eval_model_dir(args.model_path)
    model, manifest = load_model(directory, trusted=args.model)
    for item in directory.iterdir():
        if item.is_file() and item.name not in (INT8_FILE, RECORD_FILE):
            shutil.copyfile(item, staging / item.name)
    size = manifest.get("input_size")
    return quantize_model(model, size, staging, _calibration(args, size), options)


def _input_dims(path: Path):
    inputs = load_onnx(path).graph.input
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise ModelError(f"{path}: not an image classifier (expected one NCHW input)")
    return inputs[0].type.tensor_type.shape.dim


def run_quantize(args: argparse.Namespace) -> int:
    if not args.data:  # before anything is loaded or written
        raise DataError(
            "no calibration data: pass --data SPEC (its training images calibrate the activations)"
        )
    options = PtqOptions(
        calibrate_method=args.calibrate_method,
        calibration_images=args.calibration_images,
        per_channel=not args.per_tensor,
        activation_type=args.activation_type,
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as work:
        staging = Path(work)
        report = _quantize_into(args, staging, options)
        report.path = str(output / INT8_FILE)
        report.fp32_path = str(output / FP32_FILE)
        write_record(staging, report.as_dict())
        output.mkdir(exist_ok=True)
        for item in sorted(staging.iterdir(), key=lambda p: p.name == INT8_FILE):  # the int8 model last
            os.replace(item, output / item.name)
    if args.json:
        emit_json(report.as_dict())
    else:
        log(f"wrote {output / INT8_FILE}")
        print(report.summary_line())
    return 0
