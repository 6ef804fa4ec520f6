"""``export``: write a model as an inference model, ONNX or an ExecuTorch program (fp32 or int8)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from torchslim.data import build_datasets
from torchslim.errors import ConfigError, DataError
from torchslim.export import export_onnx
from torchslim.export.executorch_export import export_executorch
from torchslim.export.pte import EXTRA_HINT, PTE_FILE, require_executorch
from torchslim.quant import calibration_images
from torchslim.quant.executorch_int8 import INT8_PTE_FILE, quantize_executorch

from . import flags
from .artifacts import ONNX_FILE, eval_model_dir
from .common import add_command, add_model_arguments, data_help, load_model_from_args
from .output import emit_json, log

FORMATS = {"onnx": (".onnx", ONNX_FILE), "executorch": (".pte", PTE_FILE)}


def add_parsers(subparsers) -> None:
    parser = add_command(
        subparsers,
        "export",
        run_export,
        help="Export a model for deployment: ONNX, or an ExecuTorch program (XNNPACK, fp32 or int8).",
        description="Write --model or --model-path as an inference model: --format onnx (model.onnx, for "
        "ONNX Runtime) or --format executorch (model.pte, ExecuTorch with the XNNPACK delegate, for phones "
        f"and other CPUs; {EXTRA_HINT}). The export is checked against PyTorch before it is written (max "
        "difference, top-1 agreement) and ops left outside XNNPACK are listed. With --int8 the program is "
        "quantized with XNNPACK's quantizer (PT2E), calibrated on the first --calibration-images training "
        "images of --data. An ExecuTorch program has one fixed input shape: --batch-size images of "
        "--input-size (torchslim infer and eval run other batch sizes in pieces).",
    )
    add_model_arguments(parser)
    parser.add_argument("--format", required=True, choices=tuple(FORMATS), help="onnx or executorch.")
    parser.add_argument(
        "--output",
        help="File (.onnx / .pte) or folder to write (default: the --model-path model's own folder).",
    )
    parser.add_argument("--int8", action="store_true", help="With --format executorch: an int8 program.")
    parser.add_argument("--data", help=data_help("; with --int8 its training images calibrate."))
    parser.add_argument(
        "--calibration-images",
        type=flags.positive_int,
        default=256,
        help="With --int8: training images to calibrate on (default 256).",
    )
    parser.add_argument(
        "--batch-size",
        type=flags.timing_batch,
        default=1,
        help="With --format executorch: the program's batch size "
        f"(default 1; at most {flags.MAX_TIMING_BATCH}).",
    )


def _check_flags(args: argparse.Namespace) -> None:
    """Every flag mistake before a model is loaded or anything written."""
    if args.int8 and args.format != "executorch":
        raise ConfigError("--int8 goes with --format executorch (ONNX int8: torchslim quantize)")
    if args.int8 and not args.data:
        raise DataError("--int8 needs calibration images: pass --data SPEC (its training images are used)")
    if args.format == "executorch":
        require_executorch("--format executorch")
    if args.output is None and not args.model_path:
        raise ConfigError("--output is needed with --model (where should the export go?)")


def output_path(args: argparse.Namespace) -> Path:
    """The file to write: --output itself when it has the format's suffix, else a file in that folder
    (by default the saved model's own folder)."""
    suffix, name = FORMATS[args.format]
    if args.int8:
        name = INT8_PTE_FILE
    folder = Path(args.output) if args.output else eval_model_dir(args.model_path)
    if folder.suffix in {s for s, _ in FORMATS.values()}:
        if folder.suffix != suffix:
            raise ConfigError(f"--output {folder}: --format {args.format} writes a {suffix} file")
        return folder
    return folder / name


def _calibration(args: argparse.Namespace, size: int) -> np.ndarray:
    train, _, _, _ = build_datasets(args.data, image_size=size)
    return calibration_images(train, args.calibration_images, source=f"--data {args.data} (training split)")


def run_export(args: argparse.Namespace) -> int:
    _check_flags(args)
    loaded = load_model_from_args(args)
    path = output_path(args)
    log(f"exporting {loaded.name} ({loaded.input_size}x{loaded.input_size}) to {path} ...")
    if args.format == "onnx":
        report = export_onnx(loaded.model, loaded.example_input(), path)
        payload = {"path": str(path), "max_abs_diff": report.max_abs_diff, "size_bytes": report.size_bytes}
        summary = f"ONNX (opset {report.opset}): max diff {report.max_abs_diff:.3g} against PyTorch"
    else:
        if args.int8:
            images = _calibration(args, loaded.input_size)
            report = quantize_executorch(loaded.model, images, path, batch_size=args.batch_size)
        else:
            report = export_executorch(loaded.model, loaded.example_input(args.batch_size), path)
        payload, summary = report.as_dict(), report.summary_line()
    if args.json:
        emit_json(payload)
    else:
        log(f"wrote {path}")
        print(summary)
    return 0
