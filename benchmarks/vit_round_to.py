"""Which alignment keeps a pruned vision transformer fast on ONNX Runtime: a round_to sweep.

torchslim prunes whole heads (``head_dim`` stays, 64 in DeiT-S) and rounds every other width (embedding,
MLP hidden) to ``round_to``. This prunes timm's ``deit_small_patch16_224`` (random weights: timing only)
to -50% MACs at each ``--round-to`` and times the variants against the unpruned model on ONNX Runtime
at batch 1 and 8: built once in a fresh process, then timed interleaved through torchslim's timing path
in ``--repeats`` more fresh processes; each speedup is the median over those processes.

    python benchmarks/vit_round_to.py            # a few minutes on a quiet machine
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import log, machine_info, write_result

from torchslim.latency.compare import compare_latency, export_for_timing, in_fresh_process
from torchslim.models import build_model
from torchslim.pruning.prune import prune

MODEL = "timm:deit_small_patch16_224"
SIZE = 224


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--round-to", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="fresh timing processes per batch size")
    parser.add_argument("--output", default="vit_round_to", help="results/<output>.json")
    return parser.parse_args(argv)


def widths(model: torch.nn.Module) -> dict[str, int]:
    """Heads, embedding width and MLP hidden widths a timm ViT kept."""
    blocks = list(model.blocks)
    return {
        "heads": sum(block.attn.num_heads for block in blocks),
        "embedding": model.patch_embed.proj.out_channels,
        "mlp_hidden": sorted({block.mlp.fc1.out_features for block in blocks}),
    }


def build_variants(args, workdir: str) -> tuple[dict, dict[str, Path]]:
    """The unpruned model and one pruned variant per round_to, saved as ONNX; what each kept."""
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=1000).eval()
    example = torch.randn(1, 3, SIZE, SIZE)
    info = {"unpruned": {"macs_left": 1.0, **widths(model)}}
    models = {"unpruned": model}
    for round_to in args.round_to:
        label = f"round_to {round_to}"
        result = prune(model, example, target_flops=args.target, round_to=round_to, verify=True)
        if not result.report.verified:
            raise RuntimeError(f"{label}: the oracle failed (max |diff| {result.report.max_abs_diff})")
        info[label] = {"macs_left": 1 - result.report.flops_reduction, **widths(result.model)}
        models[label] = result.model
        log(f"  {label}: {info[label]}")
    paths = {
        label: export_for_timing(m, SIZE, Path(workdir) / f"{index}.onnx")
        for index, (label, m) in enumerate(models.items())
    }
    return info, paths


def time_variants(paths: dict[str, Path], args) -> dict[str, dict]:
    """Per batch size: every process's speedups and their median, for each variant."""
    timings = {}
    for batch in args.batches:
        runs = [
            in_fresh_process(
                compare_latency,
                dict.fromkeys(paths),
                SIZE,
                onnx_paths=paths,
                threads=args.threads,
                batch_size=batch,
                rounds=args.rounds,
            )
            for _ in range(args.repeats)
        ]
        timings[f"b{batch}"] = {
            label: {
                "speedup": statistics.median(run.speedup[label] for run in runs),
                "speedups": [run.speedup[label] for run in runs],
                "median_ms": statistics.median(run.median_ms[label] for run in runs),
                "steady": all(run.steady for run in runs),
            }
            for label in paths
        }
        speedups = ", ".join(f"{k} {v['speedup']:.2f}x" for k, v in timings[f"b{batch}"].items())
        log(f"  batch {batch}: {speedups}")
    return timings


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    payload = {"benchmark": "ViT round_to", "machine": machine_info(args.threads), "settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="torchslim-vit-round-to-") as workdir:
        log(f"{args.model}: building variants")
        payload["variants"], paths = in_fresh_process(build_variants, args, workdir)
        payload["timings"] = time_variants(paths, args)
    payload["machine_after"] = machine_info(args.threads)
    payload["seconds"] = time.perf_counter() - started
    log(f"wrote {write_result(args.output, payload)}")
    return payload


if __name__ == "__main__":
    main()
