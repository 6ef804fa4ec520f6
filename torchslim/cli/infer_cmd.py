"""``infer``: run the inference model (ONNX Runtime or ExecuTorch), time it like the seed, and print
predictions."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from torchslim.data import build_loaders
from torchslim.data.preprocess import load_image, preprocess_record
from torchslim.errors import ConfigError
from torchslim.latency.compare import compare_latency
from torchslim.latency.machine import DEFAULT_THREADS

from . import flags
from .artifacts import RUNTIME_FILES, image_classifier, inference_file, manifest_beside, runtime_of
from .common import add_command
from .output import emit_json, log, table


def add_parsers(subparsers) -> None:
    parser = add_command(
        subparsers,
        "infer",
        run_infer,
        help="Run the inference model on images, timed (ms/sample), printing top-k classes.",
        description="Load the inference model (an .onnx file, run in ONNX Runtime; a .pte file, run in "
        "ExecuTorch; or the model.onnx / model.pte of an eval model or checkpoint, per --runtime), time it "
        "as the seed did (warm-up runs, then timed runs, ms per sample), and print the top-k classes per "
        "image. Images come from --images files (preprocessed like the training data recorded in the model's "
        "manifest) or from the validation split of --data.",
    )
    parser.add_argument(
        "--model-path", "--model_path", dest="model_path", required=True, help="Model to run."
    )
    parser.add_argument("--images", nargs="+", help="Image files to classify.")
    parser.add_argument("--data", help="Or classify the first --limit validation images of this data spec.")
    parser.add_argument(
        "--limit", type=flags.positive_int, default=8, help="Images taken from --data (default 8)."
    )
    parser.add_argument(
        "--top-k", type=flags.positive_int, default=5, help="Classes printed per image (default 5)."
    )
    parser.add_argument(
        "--warmup", type=flags.non_negative_int, default=10, help="Untimed warm-up runs (default 10)."
    )
    parser.add_argument("--runs", type=flags.positive_int, default=30, help="Timed runs (default 30).")
    parser.add_argument(
        "--runtime",
        choices=tuple(RUNTIME_FILES),
        help="Runtime for a model directory (default onnxruntime); a file's suffix decides for itself.",
    )
    parser.add_argument(
        "--threads",
        type=flags.thread_count,
        default=DEFAULT_THREADS,
        help=f"Intra-op threads: ONNX Runtime's, or ExecuTorch's thread pool (default {DEFAULT_THREADS}, "
        "as report and bench latency).",
    )


def run_infer(args: argparse.Namespace) -> int:
    if not args.images and not args.data:
        raise ConfigError("give --images FILES or --data SPEC")
    runtime = runtime_of(args.model_path, args.runtime)
    path = inference_file(args.model_path, runtime)
    model = image_classifier(path, threads=args.threads)
    size = model.input_shape[-1]
    names, batch, labels = _inputs(args, path, size)
    log(f"running {path} on {len(names)} images with {RUNTIME_NAMES[runtime]}")
    logits = model(batch)
    # an ExecuTorch program has one batch size: time it on that many of the images
    timed = batch if runtime == "onnxruntime" else _batch_of(batch, model.input_shape[0])
    del model  # its session's idle workers would spin while the timing session runs
    timing = compare_latency(
        {"model": None},
        size,
        runtime=runtime,
        threads=args.threads,
        warmup=args.warmup,
        rounds=args.runs,
        **{"onnx_paths" if runtime == "onnxruntime" else "pte_paths": {"model": path}},
        example=torch.from_numpy(timed),
    )
    predictions = [
        _top_k(name, row, args.top_k, label) for name, row, label in zip(names, logits, labels, strict=True)
    ]
    payload = {
        "ms_per_sample": timing.median_ms["model"] / len(timed),
        "batch_size": len(timed),
        "runtime": runtime,
        "predictions": predictions,
    }
    if args.json:
        emit_json(payload)
        return 0
    rows = [
        [
            p["image"],
            p["classes"][0],
            f"{p['probabilities'][0]:.3f}",
            " ".join(map(str, p["classes"][1:])),
            "" if p["label"] is None else p["label"],
        ]
        for p in predictions
    ]
    print(table(["image", "class", "prob", f"next {args.top_k - 1}", "label"], rows, "lrrll"))
    print(
        f"\n{payload['ms_per_sample']:.3f} ms/sample ({RUNTIME_NAMES[runtime]}, batch {len(timed)}, "
        f"{args.threads} threads, median of "
        f"{timing.rounds_used} steady of {args.runs} runs after {args.warmup} warm-up)"
    )
    return 0


RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch"}


def _batch_of(images: np.ndarray, size: int) -> np.ndarray:
    """``size`` of ``images``, repeated when there are fewer."""
    return np.ascontiguousarray(np.resize(images, (size, *images.shape[1:])))


def _inputs(args, path, size: int):
    if args.images:
        manifest = manifest_beside(path) or {}
        record = manifest.get("preprocess") or _default_record(size)
        batch = np.stack([load_image(p, record) for p in args.images])
        return list(args.images), batch, [None] * len(args.images)
    data = build_loaders(
        args.data, batch_size=args.limit, image_size=size, val_limit=args.limit, num_workers=0
    )
    images, targets = next(iter(data.val_loader))
    names = [f"val[{i}]" for i in range(len(targets))]
    return names, images.numpy().astype(np.float32), [int(t) for t in targets]


def _default_record(size: int) -> dict:
    return preprocess_record("imagenet:.", size)


def _top_k(name: str, logits: np.ndarray, k: int, label) -> dict:
    shifted = np.exp(logits - logits.max())
    probabilities = shifted / shifted.sum()
    order = np.argsort(-probabilities)[:k]
    return {
        "image": name,
        "classes": [int(c) for c in order],
        "probabilities": [float(probabilities[c]) for c in order],
        "label": label,
    }
