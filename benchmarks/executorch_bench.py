"""ET, the on-device runtime: ExecuTorch (XNNPACK) beside ONNX Runtime, pruned and unpruned, fp32 and int8.

For MobileNetV1, MobileNetV2 and ResNet34 (P1's cached Fashion-MNIST baselines, benchmarks/cache/) at
``--size`` (224: the seed's resolution), batch 1, ``--threads`` threads, six rows per model:

* ``unpruned fp32`` and ``unpruned int8``: the baseline;
* ``pruned fp32`` and ``pruned int8``: ``torchslim.prune`` to -50% MACs at ``--size`` (torchslim's
  defaults: uniform, l1_norm, round_to 16), then batch-norm re-estimation (no fine-tune: latency only);
* ``torch-pruning fp32`` and ``torch-pruning int8``: Torch-Pruning 1.6 at the same MACs and alignment,
  the same re-estimation, through the same exports: the reference.

Every fp32 model is written as an ExecuTorch program (``export_executorch``: XNNPACK delegate, checked
against PyTorch) and as ONNX (``export_onnx``, checked against PyTorch); its int8 row is
``quantize_executorch`` (XNNPACKQuantizer, PT2E) and ``quantize_onnx`` (ORT static QDQ, per-channel),
both calibrated on the same first ``--calibration-images`` Fashion-MNIST training images resized to
``--size``; both reports give the int8 top-1 agreement with fp32 on those images. Then a model's twelve
files are timed in one fresh process by ``torchslim.latency.compare.time_runtimes``, the one timing path:
one phase per runtime, the six rows interleaved round by round, speedups (median of per-round ratios)
over the unpruned fp32 row of the same runtime.

Exports are cached in benchmarks/cache/executorch/, keyed by the weights, the size, the calibration
images and the library versions: a rerun (or a run that was stopped) redoes only what is missing.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F
from common import (
    CACHE,
    cached_baseline,
    fmnist_loaders,
    log,
    machine_info,
    macs,
    read_result,
    tp_prune_cached,
    ts_prune,
    use_results_dir,
    write_result,
)
from torch import nn

from torchslim.export import export_onnx
from torchslim.export.atomic import write_atomic
from torchslim.export.executorch_export import export_executorch
from torchslim.export.pte import executorch_version, require_executorch
from torchslim.latency.compare import in_fresh_process, time_runtimes
from torchslim.quant import PtqOptions, calibration_images, quantize_onnx
from torchslim.quant.executorch_int8 import quantize_executorch
from torchslim.recovery.batch_norm import recalibrate_batch_norm
from torchslim.reporting.results import cpu_caption

MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet34")
VARIANTS = ("unpruned", "pruned", "torch-pruning")
ROWS = tuple(f"{variant} {dtype}" for variant in VARIANTS for dtype in ("fp32", "int8"))
RUNTIMES = ("onnxruntime", "executorch")
RESULT = "executorch"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--size", type=int, default=None, help="input resolution (224; 64 with --quick)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved timing rounds (30; 5 with --quick)"
    )
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of both runtimes")
    parser.add_argument("--target", type=float, default=0.5, help="MACs reduction of the pruned rows")
    parser.add_argument("--round-to", type=int, default=16, help="channel alignment (torchslim's default)")
    parser.add_argument("--calibration-images", type=int, default=64, help="int8 calibration images")
    parser.add_argument("--bn-batches", type=int, default=20, help="batch-norm re-estimation batches")
    parser.add_argument("--train-limit", type=int, default=20000, help="P1's training slice (its baseline)")
    parser.add_argument("--baseline-epochs", type=int, default=3, help="P1's baseline (cached)")
    parser.add_argument("--baseline-lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep-others",
        action="store_true",
        help="keep the other models' rows of results/executorch.json (the section says so)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 64px, 5 rounds, 16 images; results-quick/"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calibration_images, args.bn_batches = min(args.calibration_images, 16), min(args.bn_batches, 2)
        use_results_dir(Path(__file__).resolve().parent / "results-quick")
    args.size = args.size or (64 if args.quick else 224)
    args.rounds = args.rounds or (5 if args.quick else 30)
    return args


# --------------------------------------------------------------------------- the cache of exports


def weights_digest(model: nn.Module) -> str:
    """sha1 of every parameter and buffer (names, shapes, values): a pruned model's digest changes
    with its architecture as well as its weights."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ExportCache:
    """One model's four files (fp32/int8, .pte/.onnx) and their reports, in a directory named by what
    they depend on; ``reports.json`` is rewritten (atomically) after each file."""

    directory: Path

    @classmethod
    def for_model(cls, name: str, variant: str, model: nn.Module, images: np.ndarray, size: int):
        key = hashlib.sha1()
        versions = (torch.__version__, onnxruntime.__version__, executorch_version(), str(size))
        key.update(("|".join(versions) + weights_digest(model)).encode())
        key.update(np.ascontiguousarray(images).tobytes())
        return cls(CACHE / "executorch" / f"{name}-{variant}-{size}-{key.hexdigest()[:16]}")

    @property
    def index(self) -> Path:
        return self.directory / "reports.json"

    def reports(self) -> dict:
        return json.loads(self.index.read_text()) if self.index.is_file() else {}

    def get(self, file: str, build) -> tuple[Path, dict]:
        """The cached ``file`` and its report, or ``build(path) -> report dict`` run to make them."""
        path = self.directory / file
        known = self.reports()
        if path.is_file() and file in known:
            return path, known[file]
        self.directory.mkdir(parents=True, exist_ok=True)
        report = build(path)
        known[file] = report
        write_atomic(self.index, (json.dumps(known, indent=1, default=float) + "\n").encode())
        return path, report


# --------------------------------------------------------------------------- exports of one model


def _onnx_fp32(model: nn.Module, example: torch.Tensor):
    def build(path: Path) -> dict:
        started = time.perf_counter()
        export_onnx(model, example, path)
        return {"seconds": time.perf_counter() - started}

    return build


def _onnx_int8(fp32: Path, images: np.ndarray):
    def build(path: Path) -> dict:
        report = quantize_onnx(fp32, path, images, PtqOptions(calibration_images=len(images)))
        return {
            "seconds": report.seconds,
            "top1_agreement": report.top1_agreement,
            "fallback_ops": sorted({op["op_type"] for op in report.fallback_ops}),
        }

    return build


def _pte_fp32(model: nn.Module, example: torch.Tensor):
    return lambda path: export_executorch(model, example, path).as_dict()


def _pte_int8(model: nn.Module, images: np.ndarray):
    return lambda path: quantize_executorch(model, images, path, batch_size=1).as_dict()


def export_variant(cache: ExportCache, model: nn.Module, images: np.ndarray) -> dict[str, dict]:
    """The fp32 and int8 rows of one model: each with its two files and what their reports say (the
    fp32 exports are checked against PyTorch on the first calibration image and two random inputs)."""
    model, example = model.eval(), torch.from_numpy(images[:1].copy())
    onnx32, onnx32_report = cache.get("fp32.onnx", _onnx_fp32(model, example))
    pte32, pte32_report = cache.get("fp32.pte", _pte_fp32(model, example))
    onnx8, onnx8_report = cache.get("int8.onnx", _onnx_int8(onnx32, images))
    pte8, pte8_report = cache.get("int8.pte", _pte_int8(model, images))
    rows = {}
    for dtype, onnx, onnx_report, pte, pte_report in (
        ("fp32", onnx32, onnx32_report, pte32, pte32_report),
        ("int8", onnx8, onnx8_report, pte8, pte8_report),
    ):
        rows[dtype] = {
            "onnx_path": str(onnx),
            "pte_path": str(pte),
            "onnx_bytes": onnx.stat().st_size,
            "pte_bytes": pte.stat().st_size,
            "onnx_export_seconds": onnx_report["seconds"],
            "pte_export_seconds": pte_report["seconds"],
            "pte_fallback_ops": pte_report["fallback_ops"],
            "pte_max_abs_diff": pte_report["max_abs_diff"],
        }
        if dtype == "int8":
            rows[dtype]["top1_agreement_executorch"] = pte_report["top1_agreement"]
            rows[dtype]["top1_agreement_onnxruntime"] = onnx_report["top1_agreement"]
            rows[dtype]["onnx_fallback_ops"] = onnx_report["fallback_ops"]
    return rows


# --------------------------------------------------------------------------- one model


def calibration_at(dataset, count: int, size: int, seed: int) -> np.ndarray:
    """The first ``count`` training images, resized to the timing resolution (as benchmarks/quantization.py
    calibrates its models timed at 224); the training split's augmentation seeded, so every run (and the
    export cache) sees the same images."""
    torch.manual_seed(seed)
    images = torch.from_numpy(calibration_images(dataset, count))
    resized = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return np.ascontiguousarray(resized.numpy(), dtype=np.float32)


def variants(name: str, data, args) -> tuple[dict[str, nn.Module], dict[str, dict]]:
    """The unpruned baseline, torchslim's pruned model and Torch-Pruning's at the same MACs, and how
    each was made."""
    tag = f"n{args.train_limit}-e{args.baseline_epochs}-lr{args.baseline_lr}-s{args.seed}"
    baseline, _ = cached_baseline(
        name, data, epochs=args.baseline_epochs, lr=args.baseline_lr, seed=args.seed, tag=tag
    )
    ours = ts_prune(copy.deepcopy(baseline), args.size, args.target, round_to=args.round_to)
    theirs = tp_prune_cached(name, copy.deepcopy(baseline), args.size, args.target, args.round_to)
    for pruned in (ours.model, theirs.model):
        torch.manual_seed(args.seed)  # the same augmented batches for both, in every run
        recalibrate_batch_norm(pruned, data.train_loader, num_batches=args.bn_batches)
    models = {"unpruned": baseline.eval(), "pruned": ours.model.eval(), "torch-pruning": theirs.model.eval()}
    info = {
        "unpruned": {},
        "pruned": {"prune_seconds": ours.seconds, "hit": ours.hit},
        "torch-pruning": {"prune_seconds": theirs.seconds, "hit": theirs.hit, "ratio": theirs.ratio},
    }
    before = macs(baseline, args.size)
    for variant, model in models.items():
        info[variant]["macs"] = macs(model, args.size)
        info[variant]["macs_left"] = info[variant]["macs"] / before
    return models, info


def time_rows(rows: dict[str, dict], args) -> dict[str, dict]:
    """Every row's two files timed in one fresh process: ONNX Runtime's phase, then ExecuTorch's."""
    comparisons = in_fresh_process(
        time_runtimes,
        dict.fromkeys(rows),
        args.size,
        runtimes=RUNTIMES,
        batch_size=1,
        threads=args.threads,
        rounds=args.rounds,
        onnx_paths={label: Path(row["onnx_path"]) for label, row in rows.items()},
        pte_paths={label: Path(row["pte_path"]) for label, row in rows.items()},
    )
    return {runtime: comparison.as_dict() for runtime, comparison in comparisons.items()}


def run_model(name: str, data, args) -> dict:
    started = time.perf_counter()
    images = calibration_at(data.train_loader.dataset, args.calibration_images, args.size, args.seed)
    models, info = variants(name, data, args)
    rows: dict[str, dict] = {}
    for variant, model in models.items():
        cache = ExportCache.for_model(name, variant, model, images, args.size)
        for dtype, row in export_variant(cache, model, images).items():
            rows[f"{variant} {dtype}"] = {"macs": info[variant]["macs"], **row}
    timings = time_rows(rows, args)
    for label, row in rows.items():
        for runtime in RUNTIMES:
            row[f"{runtime}_ms"] = timings[runtime]["median_ms"][label]
            row[f"{runtime}_speedup"] = timings[runtime]["speedup"][label]
        row.pop("onnx_path")
        row.pop("pte_path")
        log(
            f"{name} {label}: ExecuTorch {row['executorch_ms']:.2f} ms ({row['executorch_speedup']:.2f}x), "
            f"ORT {row['onnxruntime_ms']:.2f} ms ({row['onnxruntime_speedup']:.2f}x)"
        )
    for comparison in timings.values():
        for key in ("median_ms", "speedup"):
            comparison.pop(key)  # in the rows already
    return {"variants": info, "rows": rows, "timing": timings, "seconds": time.perf_counter() - started}


def main(argv=None) -> dict:
    args = parse_args(argv)
    require_executorch("benchmarks/executorch_bench.py")
    torch.set_num_threads(args.threads)  # exports and calibration; the timings set their own threads
    started = time.perf_counter()
    earlier = (read_result(RESULT) or {}).get("models", {}) if args.keep_others else {}
    payload = {
        "benchmark": "ET ExecuTorch vs ONNX Runtime",
        "machine": machine_info(args.threads),
        "cpu_caption": cpu_caption(),
        "executorch": executorch_version(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("models", "keep_others")},
        "data": f"Fashion-MNIST baselines (P1, 32x32), calibrated on the first {args.calibration_images} "
        f"training images resized to {args.size}x{args.size}",
        "models": {name: rows for name, rows in earlier.items() if name not in args.models},
    }
    if payload["models"]:
        payload["kept_from_earlier_run"] = sorted(payload["models"])
    data = fmnist_loaders(args.train_limit, 256, seed=args.seed)
    for name in args.models:
        payload["models"][name] = run_model(name, data, args)
        payload["seconds"] = time.perf_counter() - started
        payload["machine_after"] = {"load_average": machine_info(args.threads)["load_average"]}
        write_result(RESULT, payload)
    log(f"ET done in {time.perf_counter() - started:.0f} s")
    return payload


if __name__ == "__main__":
    main()
