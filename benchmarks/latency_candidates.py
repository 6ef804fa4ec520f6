"""Do the plans latency-aware planning chooses between differ on the clock, or only in ORT's kernel sums?

Latency-aware planning (``torchslim.latency.latency-aware prune``) profiles several
plans at the same MACs (uniform, the table's exchange plan, resolution-tilted
plans, calibrated plans) and keeps the one with the lowest summed kernel time.
Here every one of those candidates is exported and timed wall-clock against the
unpruned model, interleaved in a fresh process, ``--repeats`` times: if the
candidates' wall-clock speedups are within noise of each other while their
kernel sums differ, the choice among them can be made on accuracy at no cost in
speed, and no plan choice moves the wall-clock ratio.

The candidates are collected through the public ``score`` hook of
``latency-aware prune`` with ``speed_slack=1``: every profiled plan within 100% of
the fastest (all of them) is handed to the score, which keeps a copy.

    python benchmarks/latency_candidates.py                 # mobilenet_v2, batch 1 and 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import fresh_model, log, machine_info, write_result

INPUT = 224


def candidate_plans(name: str, target: float, batch: int, threads: int, workdir: str) -> dict:
    """Plan ``name`` for ``batch``, export the unpruned model and every profiled candidate; their paths and
    kernel sums (ms)."""
    from torchslim.latency.compare import export_for_timing
    from torchslim.latency.planner import LatencyOptions, LatencyPlanner
    from torchslim.pruning import prune

    torch.set_num_threads(threads)
    base = fresh_model(name)
    kept: list[torch.nn.Module] = []

    def keep(candidate) -> float:  # each candidate is already a fresh pruned copy (choose_by_score)
        kept.append(candidate)
        return 0.0  # all equal: the fastest is kept, as without a score

    result = prune(
        base,
        torch.randn(1, 3, INPUT, INPUT),
        target_flops=target,
        planner=LatencyPlanner(
            LatencyOptions(runtime="onnxruntime", threads=threads, batch_size=batch, speed_slack=1.0),
            score=keep,
        ),
    )
    calibration = result.plan_info.calibration
    labels = [entry["plan"] for entry in calibration["scores"]]
    paths = {
        "unpruned": str(export_for_timing(base, INPUT, Path(workdir) / f"{name}-b{batch}-unpruned.onnx"))
    }
    for label, model in zip(labels, kept, strict=True):
        paths[label] = str(
            export_for_timing(model, INPUT, Path(workdir) / f"{name}-b{batch}-{label.replace(' ', '_')}.onnx")
        )
    return {
        "paths": paths,
        "chosen": calibration["chosen"],
        "base_kernel_ms": calibration["base_ms"],
        "kernel_ms": {entry["plan"]: entry["measured_ms"] for entry in calibration["scores"]},
    }


def measure(name: str, batch: int, args, workdir: str) -> dict:
    from torchslim.latency.compare import compare_latency, in_fresh_process

    plans = in_fresh_process(candidate_plans, name, args.target, batch, args.threads, workdir)
    paths = {label: Path(path) for label, path in plans.pop("paths").items()}
    rounds = args.rounds if batch == 1 else max(5, args.rounds // 2)
    runs = []
    for repeat in range(args.repeats):
        comparison = in_fresh_process(
            compare_latency,
            dict.fromkeys(paths),
            INPUT,
            onnx_paths=paths,
            runtime="onnxruntime",
            batch_size=batch,
            threads=args.threads,
            warmup=5,
            rounds=rounds,
        )
        runs.append({"speedup": comparison.speedup, "rounds_used": comparison.rounds_used, "rounds": rounds})
        log(
            f"{name} b{batch} run {repeat + 1}: {comparison.rounds_used}/{rounds} steady rounds, "
            + ", ".join(f"{k} x{v:.3f}" for k, v in comparison.speedup.items() if k != "unpruned")
        )
    return {**plans, "runs": runs}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=40, help="timed rounds per run at batch 1 (half at batch 8)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs, each in a fresh process")
    args = parser.parse_args(argv)
    payload = {
        "benchmark": "latency-aware candidates on the clock",
        "machine": machine_info(args.threads),
        "input_size": INPUT,
        "settings": vars(args),
        "models": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="torchslim-candidates-") as workdir:
        for name in args.models:
            for batch in args.batches:
                payload["models"].setdefault(name, {})[f"b{batch}"] = measure(name, batch, args, workdir)
                payload["seconds"] = time.perf_counter() - started
                write_result("latency_candidates", payload)
    return payload


if __name__ == "__main__":
    main()
