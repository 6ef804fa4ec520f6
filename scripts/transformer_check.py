"""Prune the reference transformers to -50% MACs and prove each result end to end.

For each model (random weights, 224 px): the MACs before and after (attention's products counted), the
groups cut by kind with the units kept (heads, embedding, MLP hidden), the oracle's difference (all-zero
weights such as ViT's zero-initialised head get small random values first, so no check is vacuous), then the
pruned model saved with its manifest, rebuilt from manifest + safetensors (largest output difference),
and exported to ONNX and run in ONNX Runtime (largest difference from PyTorch). One process per model.

    python scripts/transformer_check.py                       # about a minute on 2 cores
    python scripts/transformer_check.py --models torchvision:swin_t
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from prune_coverage import make_outputs_sensitive

from torchslim.export import export_onnx
from torchslim.models import build_model, load_model, save_model
from torchslim.pruning.prune import prune

MODELS = (
    "torchvision:vit_b_16",
    "torchvision:swin_t",
    "timm:deit_small_patch16_224",
    "torchvision:maxvit_t",
)
SIZE = 224
OUTPUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "transformer_check.json"


def units_by_kind(cut: dict[str, list]) -> dict[str, list[int]]:
    """Kind -> [units before, units after] summed over that kind's cut groups."""
    totals: dict[str, list[int]] = {}
    for kind, before, after in cut.values():
        entry = totals.setdefault(kind, [0, 0])
        entry[0] += before
        entry[1] += after
    return totals


def check(name: str, target: float, round_to: int, threads: int) -> dict:
    """Prune ``name``, then save, reload and export it; every difference found on the way."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(name, num_classes=1000).eval()
    reinitialised = make_outputs_sensitive(model)  # a zero-initialised head would make every check vacuous
    example = torch.randn(2, 3, SIZE, SIZE)
    started = time.perf_counter()
    result = prune(model, example, target_flops=target, round_to=round_to, verify=True)
    report = result.report
    entry = {
        "model": name,
        "reinitialised_zero_weights": reinitialised,
        "macs_before": report.macs_before,
        "macs_after": report.macs_after,
        "reduction": report.flops_reduction,
        "groups_by_kind": report.cut_by_kind(),
        "units_by_kind": units_by_kind(report.cut),
        "groups_kept": report.groups_skipped,
        "oracle_verified": bool(report.verified),
        "oracle_max_abs_diff": report.max_abs_diff,
    }
    pruned = result.model.eval()
    with torch.no_grad():
        entry["output_abs_max"] = float(pruned(example).abs().max())
    with tempfile.TemporaryDirectory(prefix="torchslim-transformer-check-") as directory:
        save_model(directory, pruned, name, {"num_classes": 1000}, input_size=SIZE)
        rebuilt, _ = load_model(directory)
        with torch.no_grad():
            entry["reload_max_abs_diff"] = float((rebuilt.eval()(example) - pruned(example)).abs().max())
        exported = export_onnx(rebuilt, example[:1], Path(directory) / "model.onnx", verify=True)
        entry["ort_max_abs_diff"] = exported.max_abs_diff
    entry["seconds"] = time.perf_counter() - started
    return entry


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = []
    for name in args.models:  # a fresh process each: one model's memory is gone before the next
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            entry = pool.submit(check, name, args.target, args.round_to, args.threads).result()
        results.append(entry)
        print(
            f"{name}: {entry['macs_before'] / 1e9:.3f} G -> {entry['macs_after'] / 1e9:.3f} G "
            f"(-{entry['reduction']:.2%}), cut {entry['groups_by_kind']}, "
            f"oracle {entry['oracle_max_abs_diff']:.1e}, reload {entry['reload_max_abs_diff']:.1e}, "
            f"ORT {entry['ort_max_abs_diff']:.1e}",
            flush=True,
        )
    payload = {"target": args.target, "round_to": args.round_to, "input_size": SIZE, "results": results}
    temporary = args.output.with_name(args.output.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=1) + "\n")
    temporary.replace(args.output)
    return payload


if __name__ == "__main__":
    main()
