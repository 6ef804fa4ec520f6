"""``eval``: top-1/top-5 of an eval model (PyTorch) or an inference model (ONNX Runtime, ExecuTorch)."""

from __future__ import annotations

import argparse

import numpy as np

from torchslim.data import DEFAULT_DATA_SPEC, build_loaders
from torchslim.data.loaders import check_label_range
from torchslim.engine import evaluate
from torchslim.engine.device import num_outputs
from torchslim.engine.evaluate import evaluate_onnx
from torchslim.models import load_model

from . import flags
from .artifacts import RUNTIME_FILES, eval_model_dir, image_classifier, inference_file, runtime_of
from .common import add_command, data_help
from .output import emit_json, log


def add_parsers(subparsers) -> None:
    parser = add_command(
        subparsers,
        "eval",
        run_eval,
        help="Evaluate a saved model's top-1/top-5 accuracy.",
        description="Evaluate top-1/top-5 on the validation split of --data. --model-path may be a saved "
        "model directory, a checkpoint epoch directory or checkpoint root (its newest eval model), an "
        ".onnx inference model, which is run through ONNX Runtime, or a .pte program, run in ExecuTorch. "
        "--runtime runs a model directory's model.onnx or model.pte instead of its PyTorch model.",
    )
    parser.add_argument(
        "--model-path", "--model_path", dest="model_path", required=True, help="Model to evaluate."
    )
    parser.add_argument(
        "--model", help="For models built by your own factory (file.py:factory): name it to trust its code."
    )
    parser.add_argument(
        "--data", default=DEFAULT_DATA_SPEC, help=data_help(f"; default {DEFAULT_DATA_SPEC}.")
    )
    parser.add_argument(
        "--val-limit", type=flags.positive_int, help="Use only the first N validation images."
    )
    parser.add_argument(
        "--batch-size", type=flags.positive_int, default=256, help="Images per batch (default 256)."
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (PyTorch models only).")
    parser.add_argument(
        "--runtime",
        choices=("pytorch", *RUNTIME_FILES),
        help="Run a model directory in PyTorch (its eval model, the default) or its inference model in "
        "onnxruntime / executorch; a .onnx or .pte file's suffix decides for itself.",
    )
    parser.add_argument(
        "--skip-bad-images", action="store_true", help="Skip (and count) image files that cannot be decoded."
    )


def run_eval(args: argparse.Namespace) -> int:
    runtime = runtime_of(args.model_path, args.runtime, default="pytorch")
    is_onnx = runtime in RUNTIME_FILES  # an inference model, run outside PyTorch
    if is_onnx:
        path = inference_file(args.model_path, runtime)
        ort_model = image_classifier(path)
        size = ort_model.input_shape[-1]
    else:
        path = eval_model_dir(args.model_path)
        model, manifest = load_model(path, trusted=args.model)
        size = manifest.get("input_size")
    data = build_loaders(
        args.data,
        batch_size=args.batch_size,
        image_size=size,
        val_limit=args.val_limit,
        num_workers=0,
        skip_bad_images=args.skip_bad_images,
    )
    log(f"evaluating {path} on {data.description}")
    if is_onnx:
        classes = ort_model(np.zeros((1, 3, size, size), np.float32)).shape[-1]
    else:
        classes = num_outputs(model, size)
    if classes is not None:  # a label beyond the model's outputs: a DataError naming it, not an IndexError
        check_label_range(data, int(classes), splits=("val",))
    if is_onnx:
        result = evaluate_onnx(ort_model, data.val_loader)
    else:
        result = evaluate(model.to(args.device), data.val_loader, device=args.device, progress=not args.json)
    payload = {"top1": result.top1, "top5": result.top5, "samples": result.samples, "model_path": str(path)}
    if data.bad_images:
        payload["bad_images_skipped"] = data.bad_images
        log(f"skipped {data.bad_images} unreadable images")
    if args.json:
        emit_json(payload)
    else:
        print(f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  ({result.samples} images)")
    return 0
