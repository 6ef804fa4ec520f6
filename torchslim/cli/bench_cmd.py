"""``bench latency``: prune (given a target), then time the unpruned and the pruned model interleaved."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from torchslim.errors import ConfigError
from torchslim.export.pte import EXTRA_HINT, require_executorch
from torchslim.latency.compare import compare_latency, export_for_timing, in_fresh_process
from torchslim.latency.machine import TIMING_RUNTIMES
from torchslim.models import build_from_manifest
from torchslim.pruning.counting import profile_model
from torchslim.pruning.prune import prune

from . import flags
from .common import LoadedModel, add_command, add_model_arguments, load_model_from_args, pick
from .output import emit_json, log, table
from .prune_flags import add_latency_arguments, add_pruning_arguments, check_planning_runtime, latency_planner

BASE = "unpruned"
PRUNED = "pruned"
TIMING = ("runtime", "batch_size", "threads", "device", "warmup", "rounds")  # compare_latency's options


def add_parsers(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="Measure what pruning buys: latency of the unpruned vs the pruned model.",
        description="Benchmarks. `torchslim bench latency --help` for the latency comparison.",
    )
    bench.set_defaults(handler=lambda args: _help(bench))
    commands = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    parser = add_command(
        commands,
        "latency",
        run_latency,
        help="Time the unpruned and the pruned model interleaved (A B A B, warm-up, medians).",
        description="Prune --model to --target-flops (or load a pruned --model-path) and time the unpruned "
        "and the pruned model on ONNX Runtime, PyTorch eager or ExecuTorch, interleaved round by round with "
        "fixed threads. The speedup is the median of the per-round ratios, which holds on a busy machine "
        "where absolute times drift, over the steady rounds: those whose unpruned run took at most 1.12x its "
        "fastest (rounds that ran while the machine was slowed down are left out; a warning says when most "
        "were). With --model-path and no target, the unpruned model is the saved model's base "
        "architecture; with a target, the saved model is pruned further.",
    )
    add_model_arguments(parser)
    add_pruning_arguments(parser, target_required=False)
    add_latency_arguments(
        parser,
        runtime_help="Runtime to time on (and to plan for with --align latency): onnxruntime, eager "
        f"(PyTorch), or executorch (XNNPACK; {EXTRA_HINT}).",
        runtimes=TIMING_RUNTIMES,
    )
    parser.add_argument(
        "--batch-size",
        type=flags.timing_batch,
        default=1,
        help=f"Images per call (default 1; at most {flags.MAX_TIMING_BATCH}).",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (ONNX Runtime: its CUDA provider).")
    parser.add_argument("--rounds", type=flags.positive_int, default=30, help="Timed rounds (default 30).")
    parser.add_argument(
        "--warmup", type=flags.non_negative_int, default=5, help="Untimed warm-up rounds (default 5)."
    )


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _check_device(device: str) -> None:
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available")


def _prune(loaded: LoadedModel, args: argparse.Namespace):
    planner = latency_planner(args, args.batch_size) if args.align == "latency" else None
    alignment = {"planner": planner} if planner is not None else {"round_to": args.round_to}
    return prune(
        loaded.model,
        loaded.example_input(),
        target_flops=args.target_flops,
        criterion=args.criterion,
        aliases=loaded.seed_aliases(),
        **alignment,
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
    _check_device(args.device)
    check_planning_runtime(args)
    if args.runtime == "executorch":
        require_executorch("--runtime executorch")
        if args.device != "cpu":
            raise ConfigError("--runtime executorch runs on the CPU only (XNNPACK); drop --device")
    loaded = load_model_from_args(args)
    models = _models_to_time(loaded, args)
    macs = {label: profile_model(model, loaded.input_size).macs for label, model in models.items()}
    log(
        f"timing {', '.join(models)} on {args.runtime}, batch {args.batch_size}, {args.threads} threads, "
        f"{args.rounds} rounds ..."
    )
    options = pick(args, *TIMING)
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
    payload = _payload(args, result, macs)
    if args.json:
        emit_json(payload)
    else:
        _print_table(args, result, macs, payload)
    return 0


def _models_to_time(loaded: LoadedModel, args: argparse.Namespace) -> dict:
    """The unpruned model, and the pruned one when there is one (pruned here, or the saved model)."""
    if args.target_flops is not None:
        log(f"pruning {loaded.name} to -{args.target_flops:.0%} MACs ...")
        return {BASE: loaded.model.eval(), PRUNED: _prune(loaded, args).eval()}
    if loaded.manifest is not None:
        base = build_from_manifest({**loaded.manifest, "modules": {}}, args.model)
        return {BASE: base.eval(), PRUNED: loaded.model.eval()}
    return {BASE: loaded.model.eval()}


def _payload(args: argparse.Namespace, result, macs: dict) -> dict:
    pruned = PRUNED in macs
    return {
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


def _print_table(args: argparse.Namespace, result, macs: dict, payload: dict) -> None:
    rows = [[BASE, f"{macs[BASE] / 1e6:.1f}M", "100.0%", f"{result.median_ms[BASE]:.3f}", "1.00x"]]
    if PRUNED in macs:
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
