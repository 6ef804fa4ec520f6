"""``bench latency``: prune (when a target is given) and time the unpruned vs the pruned model, interleaved."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from torchslim.errors import ConfigError
from torchslim.latency.compare import compare_latency, export_for_timing, in_fresh_process
from torchslim.latency.machine import DEFAULT_THREADS, RUNTIMES
from torchslim.latency.planner import LatencyOptions, LatencyPlanner
from torchslim.models import build_from_manifest, seed_param_names
from torchslim.pruning.counting import profile_model
from torchslim.pruning.planner import DEFAULT_ROUND_TO
from torchslim.pruning.prune import prune

from .common import add_model_arguments, load_model_from_args
from .output import emit_json, log, table

BASE = "unpruned"
PRUNED = "pruned"


def add_parsers(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="Measure what pruning buys: latency of the unpruned vs the pruned model.",
        description="Benchmarks. `torchslim bench latency --help` for the latency comparison.",
    )
    bench.set_defaults(handler=lambda args: _help(bench))
    commands = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    parser = commands.add_parser(
        "latency",
        help="Time the unpruned and the pruned model interleaved (A B A B, warm-up, medians).",
        description="Prune --model to --target-flops (or load a pruned --model-path) and time the unpruned and "
        "the pruned model on ONNX Runtime or PyTorch eager, interleaved round by round with fixed threads. "
        "The speedup is the median of the per-round ratios, which holds on a busy machine where absolute "
        "times drift, over the steady rounds: those whose unpruned run took at most 1.12x its fastest (rounds "
        "that ran while the machine was slowed down are left out; a warning says when most were). With "
        "--model-path and no target, the unpruned model is the saved model's base architecture; with a "
        "target, the saved model is pruned further.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--target-flops", type=float, default=None, help="Fraction of MACs to remove, e.g. 0.5."
    )
    parser.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime", help="Runtime to time on.")
    parser.add_argument("--batch-size", type=int, default=1, help="Images per call (default 1).")
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help=f"Intra-op threads (default {DEFAULT_THREADS})."
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (ONNX Runtime: its CUDA provider).")
    parser.add_argument(
        "--criterion", default="l1_norm", help="Channel importance criterion (default l1_norm)."
    )
    parser.add_argument(
        "--round-to",
        type=int,
        default=DEFAULT_ROUND_TO,
        help=f"Channel alignment (default {DEFAULT_ROUND_TO}).",
    )
    parser.add_argument(
        "--align",
        choices=("round_to", "latency"),
        default="round_to",
        help="round_to: one alignment for all layers. latency: per-layer alignment and channel allocation from "
        "a latency table measured on --runtime (built once per machine, cached in ~/.cache/torchslim).",
    )
    parser.add_argument(
        "--latency-cache", default=None, help="Directory of the latency table (with --align latency)."
    )
    parser.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="With --align latency on onnxruntime: plan from the latency table alone, without profiling whole "
        "pruned models to calibrate it (calibration takes a few seconds per profiled plan).",
    )
    parser.add_argument("--rounds", type=int, default=30, help="Timed rounds (default 30).")
    parser.add_argument("--warmup", type=int, default=5, help="Untimed warm-up rounds (default 5).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    parser.set_defaults(handler=run_latency)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _check(args: argparse.Namespace) -> None:
    if args.target_flops is not None and not 0.0 < args.target_flops < 1.0:
        raise ConfigError(f"--target-flops must be in (0, 1), got {args.target_flops}")
    for name in ("batch_size", "threads", "rounds", "round_to"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available")


def _prune(loaded, args: argparse.Namespace):
    aliases = seed_param_names(loaded.name, loaded.model) if ":" not in loaded.name else {}
    example = loaded.example_input()
    if args.align == "latency":
        options = LatencyOptions(
            runtime=args.runtime,
            threads=args.threads,
            batch_size=args.batch_size,
            cache_dir=args.latency_cache,
            calibrate=args.calibrate and args.runtime == "onnxruntime",
        )
        planner = LatencyPlanner(options)
        return prune(
            loaded.model,
            example,
            target_flops=args.target_flops,
            criterion=args.criterion,
            aliases=aliases,
            planner=planner,
        ).model
    return prune(
        loaded.model,
        example,
        target_flops=args.target_flops,
        criterion=args.criterion,
        round_to=args.round_to,
        aliases=aliases,
    ).model


def _compare_in_fresh_process(models: dict, input_size: int, options: dict):
    """ORT timing of ``models`` exported here and timed in a new process.

    Latency-aware planning ran ORT's profiler in this process, and timing runs made
    after it were slower. Only the ONNX files cross over: a model class defined in
    a user's file cannot be unpickled in the new process.
    """
    with tempfile.TemporaryDirectory(prefix="torchslim-bench-") as workdir:
        paths = {
            label: export_for_timing(model, input_size, Path(workdir) / f"{label}.onnx")
            for label, model in models.items()
        }
        return in_fresh_process(
            compare_latency, dict.fromkeys(models), input_size, onnx_paths=paths, **options
        )


def run_latency(args: argparse.Namespace) -> int:
    _check(args)
    loaded = load_model_from_args(args)
    models = {BASE: loaded.model.eval()}
    if args.target_flops is not None:
        log(f"pruning {loaded.name} to -{args.target_flops:.0%} MACs ...")
        models[PRUNED] = _prune(loaded, args).eval()
    elif loaded.manifest is not None:
        base = build_from_manifest({**loaded.manifest, "modules": {}}, args.model)
        models = {BASE: base.eval(), PRUNED: loaded.model.eval()}
    macs = {label: profile_model(model, loaded.input_size).macs for label, model in models.items()}
    log(
        f"timing {', '.join(models)} on {args.runtime}, batch {args.batch_size}, {args.threads} threads, "
        f"{args.rounds} rounds ..."
    )
    options = dict(
        runtime=args.runtime,
        batch_size=args.batch_size,
        threads=args.threads,
        device=args.device,
        warmup=args.warmup,
        rounds=args.rounds,
    )
    if args.align == "latency" and args.target_flops is not None and args.runtime == "onnxruntime":
        result = _compare_in_fresh_process(models, loaded.input_size, options)
    else:
        result = compare_latency(models, loaded.input_size, **options)
    if not result.steady:
        base = result.samples_ms[BASE]
        log(
            f"warning: the machine's speed changed while timing: the unpruned model took {min(base):.3f}-"
            f"{max(base):.3f} ms a round and fewer than half the rounds were within 1.12x of the fastest, so "
            "all rounds are used; rerun on a quieter machine or with more --rounds"
        )
    pruned = PRUNED in models
    payload = {
        "macs_ratio": macs[PRUNED] / macs[BASE] if pruned else 1.0,
        "latency_base_ms": result.median_ms[BASE],
        "latency_pruned_ms": result.median_ms[PRUNED] if pruned else None,
        "speedup": result.speedup[PRUNED] if pruned else None,
        "runtime": args.runtime,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "rounds": result.rounds,
        "rounds_used": result.rounds_used,
    }
    if args.json:
        emit_json(payload)
        return 0
    rows = [[BASE, f"{macs[BASE] / 1e6:.1f}M", "100.0%", f"{result.median_ms[BASE]:.3f}", "1.00x"]]
    if pruned:
        rows.append(
            [
                PRUNED,
                f"{macs[PRUNED] / 1e6:.1f}M",
                f"{payload['macs_ratio']:.1%}",
                f"{result.median_ms[PRUNED]:.3f}",
                f"{payload['speedup']:.2f}x",
            ]
        )
    print(table(["model", "MACs", "MACs left", "median ms", "speedup"], rows))
    print(
        f"\n{args.runtime}, batch {args.batch_size}, {args.threads} threads, {result.rounds_used} of "
        f"{args.rounds} interleaved rounds steady; speedup = median of per-round ratios"
    )
    return 0
