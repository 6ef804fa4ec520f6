"""``infer``: run the inference model in ONNX Runtime, time it like the seed, and print predictions."""

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
from .artifacts import image_classifier, manifest_beside, onnx_file
from .common import add_command
from .output import emit_json, log, table


def add_parsers(subparsers) -> None:
    parser = add_command(
        subparsers,
        "infer",
        run_infer,
        help="Run the ONNX inference model on images, timed (ms/sample), printing top-k classes.",
        description="Load the inference model (model.onnx of an eval model, a checkpoint, or an .onnx file) "
        "in ONNX Runtime, time it as the seed did (warm-up runs, then timed runs, ms per sample), and print "
        "the top-k classes per image. Images come from --images files (preprocessed like the training data "
        "recorded in the model's manifest) or from the validation split of --data.",
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
        "--threads",
        type=flags.thread_count,
        default=DEFAULT_THREADS,
        help=f"ONNX Runtime intra-op threads (default {DEFAULT_THREADS}, as report and bench latency).",
    )


def run_infer(args: argparse.Namespace) -> int:
    if not args.images and not args.data:
        raise ConfigError("give --images FILES or --data SPEC")
    path = onnx_file(args.model_path)
    model = image_classifier(path, threads=args.threads)
    size = model.input_shape[-1]
    names, batch, labels = _inputs(args, path, size)
    log(f"running {path} on {len(names)} images with ONNX Runtime")
    logits = model(batch)
    del model  # its session's idle workers would spin while the timing session runs
    timing = compare_latency(
        {"model": None},
        size,
        threads=args.threads,
        warmup=args.warmup,
        rounds=args.runs,
        onnx_paths={"model": path},
        example=torch.from_numpy(batch),
    )
    predictions = [
        _top_k(name, row, args.top_k, label) for name, row, label in zip(names, logits, labels, strict=True)
    ]
    payload = {
        "ms_per_sample": timing.median_ms["model"] / len(names),
        "batch_size": len(names),
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
        f"\n{payload['ms_per_sample']:.3f} ms/sample (batch {len(names)}, {args.threads} threads, median of "
        f"{timing.rounds_used} steady of {args.runs} runs after {args.warmup} warm-up)"
    )
    return 0


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
