"""The pruning flags ``prune`` and ``bench latency`` share, and the pruning they ask for."""

from __future__ import annotations

import argparse

from torchslim.criteria import CRITERIA, DEFAULT_CRITERION
from torchslim.errors import ConfigError
from torchslim.latency.machine import DEFAULT_THREADS, RUNTIMES
from torchslim.latency.planner import LatencyOptions, LatencyPlanner
from torchslim.pruning.planner import DEFAULT_ROUND_TO

from . import flags
from .common import registered_names


def add_pruning_arguments(parser: argparse.ArgumentParser, *, target_required: bool) -> None:
    """``--target-flops``, ``--criterion``, ``--round-to`` and ``--align``."""
    parser.add_argument(
        "--target-flops",
        type=flags.fraction,
        required=target_required,
        default=None,
        help="Fraction of MACs to remove, e.g. 0.5.",
    )
    parser.add_argument(
        "--criterion",
        type=flags.criterion,
        default=DEFAULT_CRITERION,
        help=f"Channel importance criterion (default {DEFAULT_CRITERION}): {registered_names(CRITERIA)}.",
    )
    parser.add_argument(
        "--round-to",
        type=flags.positive_int,
        default=DEFAULT_ROUND_TO,
        help=f"Keep channel counts multiples of N (default {DEFAULT_ROUND_TO}: what ONNX Runtime runs "
        "fastest).",
    )
    parser.add_argument(
        "--align",
        choices=("round_to", "latency"),
        default="round_to",
        help="round_to: one alignment for all layers. latency: per-layer alignment and channels traded "
        "between layers to cut measured latency on --runtime at the same MACs (latency table cached in "
        "~/.cache/torchslim/latency; on onnxruntime calibrated by profiling whole pruned models).",
    )


def add_latency_arguments(group, *, runtime_help: str, runtimes: tuple[str, ...] = RUNTIMES) -> None:
    """``--runtime`` (one of ``runtimes``), ``--threads``, ``--latency-cache`` and ``--no-calibrate``."""
    group.add_argument("--runtime", choices=runtimes, default="onnxruntime", help=runtime_help)
    group.add_argument(
        "--threads",
        type=flags.thread_count,
        default=DEFAULT_THREADS,
        help=f"Intra-op threads (default {DEFAULT_THREADS}).",
    )
    group.add_argument(
        "--latency-cache",
        type=flags.output_dir,
        default=None,
        help="Directory of the latency table (with --align latency).",
    )
    group.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="With --align latency on onnxruntime: plan from the latency table alone, without profiling "
        "whole pruned models.",
    )


def check_planning_runtime(args: argparse.Namespace) -> None:
    """``--align latency`` plans only for the runtimes a latency table measures."""
    if args.align == "latency" and args.runtime not in RUNTIMES:
        raise ConfigError(
            f"--align latency plans for {' or '.join(RUNTIMES)}, not --runtime {args.runtime}: plan for "
            "onnxruntime, or use --align round_to"
        )


def latency_planner(
    args: argparse.Namespace, batch_size: int, *, speed_slack: float | None = None, score=None
) -> LatencyPlanner:
    """The planner ``--align latency`` asks for; calibration only runs on ONNX Runtime."""
    check_planning_runtime(args)
    options = LatencyOptions(
        runtime=args.runtime,
        threads=args.threads,
        batch_size=batch_size,
        cache_dir=args.latency_cache,
        calibrate=args.calibrate and args.runtime == "onnxruntime",
        **({} if speed_slack is None else {"speed_slack": speed_slack}),
    )
    return LatencyPlanner(options, score=score)
