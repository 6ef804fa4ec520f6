"""Q, prune + int8: Fashion-MNIST 32x32, -50% MACs, then ONNX Runtime static int8 (PTQ) or QAT.

For MobileNetV1, MobileNetV2 and ResNet34 (P1's cached baselines, benchmarks/cache/), in one run:

* ``unpruned fp32``: the baseline.
* ``pruned fp32``: ``torchslim.prune`` to -50% MACs (uniform, l1_norm, torchslim's default round_to 16),
  batch-norm re-estimation, then P1's fine-tune (epochs, LR, cosine, seed).
* ``pruned + PTQ``: that model through ``torchslim.quant.quantize_onnx`` (ORT pre-processing, QDQ,
  per-channel int8 weights, uint8 activations calibrated (``--calibrate-method``, minmax) on the first
  256 training images, float logits).
* ``pruned + QAT``: the pruned fp32 model fine-tuned ``--qat-epochs`` more with fake quantization
  (``torchslim.quant.qat``: torch.export + torchao PT2E, batch norms folded), exported as int8 QDQ.
* ``torch-pruning + PTQ``: Torch-Pruning 1.6 at the same MACs and alignment, the same BN re-estimation,
  fine-tune and PTQ: what a user would build by hand from the two tools.

Top-1/top-5 are measured in ONNX Runtime on the test slice for every row; sizes are the ONNX files;
latency is ONNX Runtime at ``--latency-size`` (224: the seed's resolution), batch 1 and 8, ``--threads``
threads, all models timed interleaved in one process (median of ``--rounds``), reported as speedups
over the unpruned fp32 model. The int8 models timed at 224 are the same quantized models re-exported at
that size (PTQ: calibrated on the calibration images resized; QAT: the same observer state).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import (
    cached_baseline,
    fmnist_loaders,
    log,
    machine_info,
    macs,
    tp_prune_cached,
    train_epochs,
    ts_prune,
    use_results_dir,
    write_result,
)

from torchslim.engine.evaluate import evaluate_onnx
from torchslim.errors import ModelError
from torchslim.export import OrtModel, export_onnx, time_interleaved
from torchslim.export.sessions import TimingSession
from torchslim.quant import PtqOptions, calibration_images, quantize_onnx
from torchslim.quant.ptq import ACTIVATION_TYPES, CALIBRATE_METHODS
from torchslim.quant.qat import export_int8, float_model_of, prepare_qat
from torchslim.recovery.batch_norm import recalibrate_batch_norm
from torchslim.reporting.results import cpu_caption

MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet34")
ROWS = ("unpruned fp32", "pruned fp32", "pruned + PTQ", "pruned + QAT", "torch-pruning + PTQ")
BATCHES = (1, 8)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--train-limit", type=int, default=20000, help="P1's training slice")
    parser.add_argument("--val-limit", type=int, default=5000, help="P1's test slice")
    parser.add_argument("--baseline-epochs", type=int, default=3, help="P1's baseline (cached)")
    parser.add_argument("--baseline-lr", type=float, default=0.05)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--qat-lr", type=float, default=0.001)
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--calibrate-method", choices=CALIBRATE_METHODS, default="minmax", help="PTQ")
    parser.add_argument("--activation-type", choices=ACTIVATION_TYPES, default="uint8", help="PTQ")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=16)
    parser.add_argument("--bn-batches", type=int, default=20)
    parser.add_argument("--latency-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the timings")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny slices, 1 epoch each, 64px, 3 rounds; results-quick/"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_limit, args.val_limit, args.baseline_epochs, args.finetune_epochs = 512, 256, 1, 1
        args.calibration_images, args.latency_size, args.rounds = 64, 64, 3
        use_results_dir(Path(__file__).resolve().parent / "results-quick")
    return args


def finetuned(model, data, args) -> torch.nn.Module:
    recalibrate_batch_norm(model, data.train_loader, num_batches=args.bn_batches)
    train_epochs(model, data, epochs=args.finetune_epochs, lr=args.finetune_lr, seed=args.seed)
    return model.eval()


def onnx_accuracy(path: Path, data) -> dict:
    result = evaluate_onnx(OrtModel(path), data.val_loader)
    return {"top1": result.top1, "top5": result.top5, "size_bytes": path.stat().st_size}


def ptq_options(args) -> PtqOptions:
    return PtqOptions(calibrate_method=args.calibrate_method, activation_type=args.activation_type)


def ptq(fp32: Path, int8: Path, images: np.ndarray, args) -> dict:
    report = quantize_onnx(fp32, int8, images, ptq_options(args))
    return {
        "agreement": report.top1_agreement,
        "fallback_ops": sorted({f["op_type"] for f in report.fallback_ops}),
    }


class Row:
    """One model of the table: its 32px ONNX file (accuracy, size) and the one timed at latency size."""

    def __init__(self, work: Path, name: str) -> None:
        self.small = work / f"{name}.onnx"
        self.large = work / f"{name}-large.onnx"
        self.entry: dict = {}


def fp32_row(work: Path, name: str, model, args, data) -> Row:
    row = Row(work, name)
    export_onnx(model, torch.zeros(1, 3, 32, 32), row.small)
    size = args.latency_size
    export_onnx(model, torch.zeros(1, 3, size, size), row.large, verify=False)
    row.entry = onnx_accuracy(row.small, data)
    return row


def ptq_row(work: Path, name: str, fp32: Row, images: np.ndarray, args, data) -> Row:
    row = Row(work, name)
    row.entry = ptq(fp32.small, row.small, images, args)
    large = F.interpolate(torch.from_numpy(images[:64]), size=args.latency_size, mode="bilinear").numpy()
    quantize_onnx(fp32.large, row.large, large, ptq_options(args))
    row.entry.update(onnx_accuracy(row.small, data))
    return row


def qat_row(work: Path, model, args, data) -> Row:
    row = Row(work, "qat")
    qat = prepare_qat(copy.deepcopy(model), torch.zeros(2, 3, 32, 32))
    started = time.perf_counter()
    train_epochs(qat, data, epochs=args.qat_epochs, lr=args.qat_lr, seed=args.seed)
    row.entry = {"qat_seconds": time.perf_counter() - started}
    export_int8(qat, 32, row.small)
    size = args.latency_size
    large = prepare_qat(copy.deepcopy(float_model_of(qat)), torch.zeros(2, 3, size, size))
    large.load_observer_state(qat.observer_state())
    export_int8(large, size, row.large)
    row.entry.update(onnx_accuracy(row.small, data))
    return row


def time_rows(rows: dict[str, Row], args) -> None:
    """ORT latency of every row's large model at each batch size, interleaved; speedups over unpruned."""
    size = args.latency_size
    for batch in BATCHES:
        example = np.random.default_rng(0).normal(size=(batch, 3, size, size)).astype(np.float32)
        sessions = {label: TimingSession(row.large, args.threads) for label, row in rows.items()}
        calls = {label: (lambda s=s, x=example: s(x)) for label, s in sessions.items()}
        timings = time_interleaved(calls, warmup=3, rounds=args.rounds)
        base = timings["unpruned fp32"].median_ms
        for label, row in rows.items():
            row.entry[f"ort_ms_b{batch}"] = timings[label].median_ms
            row.entry[f"speedup_b{batch}"] = base / timings[label].median_ms


def run_model(name: str, args) -> dict:
    data = fmnist_loaders(args.train_limit, args.val_limit, seed=args.seed)
    tag = f"n{args.train_limit}-e{args.baseline_epochs}-lr{args.baseline_lr}-s{args.seed}"
    baseline, _ = cached_baseline(
        name, data, epochs=args.baseline_epochs, lr=args.baseline_lr, seed=args.seed, tag=tag
    )
    images = calibration_images(data.train_loader.dataset, args.calibration_images)
    ours = finetuned(
        ts_prune(copy.deepcopy(baseline), 32, args.target, round_to=args.round_to).model, data, args
    )
    theirs_pruned = tp_prune_cached(name, copy.deepcopy(baseline), 32, args.target, args.round_to)
    theirs = finetuned(theirs_pruned.model, data, args)
    with tempfile.TemporaryDirectory(prefix="torchslim-quant-bench-") as workdir:
        work = Path(workdir)
        rows = {"unpruned fp32": fp32_row(work, "base", baseline.eval(), args, data)}
        rows["pruned fp32"] = fp32_row(work, "pruned", ours, args, data)
        rows["pruned + PTQ"] = ptq_row(work, "pruned-ptq", rows["pruned fp32"], images, args, data)
        failed = {}
        try:
            rows["pruned + QAT"] = qat_row(work, ours, args, data)
        except ModelError as error:  # recorded as a failed row, the others still run
            failed["pruned + QAT"] = {"error": str(error)}
            log(f"{name} pruned + QAT failed: {error}")
        tp_fp32 = fp32_row(work, "tp", theirs, args, data)
        rows["torch-pruning + PTQ"] = ptq_row(work, "tp-ptq", tp_fp32, images, args, data)
        time_rows(rows, args)
        result = {label: row.entry for label, row in rows.items()} | failed
    result["pruned fp32"]["macs"] = macs(ours, 32)
    result["torch-pruning + PTQ"]["macs"] = theirs_pruned.macs_after
    result["unpruned fp32"]["macs"] = macs(baseline, 32)
    for label, entry in result.items():
        log(f"{name} {label}: " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if isinstance(v, float)))
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)  # training, as P1 (the timings use --threads ORT threads)
    started = time.perf_counter()
    payload = {
        "benchmark": "Q prune + int8",
        "machine": machine_info(args.threads),
        "cpu_caption": cpu_caption(),
        "settings": {k: v for k, v in vars(args).items() if k != "models"},
        "data": f"Fashion-MNIST 32x32, train first {args.train_limit}, test first {args.val_limit}",
        "models": {},  # every model's rows from this one run
    }
    for name in args.models:
        payload["models"][name] = run_model(name, args)
        payload["seconds"] = time.perf_counter() - started
        write_result("quantization", payload)
    log(f"Q done in {time.perf_counter() - started:.0f} s")
    return payload


if __name__ == "__main__":
    main()
