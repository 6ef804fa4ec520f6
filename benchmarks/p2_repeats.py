"""P2 at 2.0x (issue 20): -50% MACs in ONNX Runtime, median of fresh-process runs, and node profiles.

For MobileNetV1, MobileNetV2 and ResNet34 at 224 (1000 classes), the variants are built once in
a fresh process (``benchmarks/latency.py``'s ``build_and_save``: torchslim uniform round_to 16,
torchslim latency-aware planned for batch 1 and for batch 8, Torch-Pruning L1 round_to 16), then
timed ``--repeats`` times, each time in a new process (``latency.time_all``: interleaved
rounds, machine-state probes, ORT kernel sums). The speedup reported is the median over those
runs of each run's speedup. Last, in ``--repeats`` more fresh processes, the unpruned model and the
fastest torchslim variant are profiled node by node, each node's fastest time kept (``p2_nodes.py``):
where the 2x is lost.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import median

import latency
import torch
from common import log, machine_info, measure_each_model
from p2_nodes import fastest_profile, node_times_pair

from torchslim.latency.compare import in_fresh_process

GOAL = 2.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(latency.MODELS))
    parser.add_argument("--repeats", type=int, default=3, help="fresh timing processes per model")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds at batch 1 (half at batch 8)")
    parser.add_argument("--profile-runs", type=int, default=40, help="profiled runs per node at batch 1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="p2_repeats", help="results/<output>.json")
    args = parser.parse_args(argv)
    args.timing = latency.parse_args(
        [
            "--threads",
            str(args.threads),
            "--rounds",
            str(args.rounds),
            "--runtimes",
            "onnxruntime",
            "--ts-round-to",
            "16",
            "--tp-round-to",
            "16",
            "--state-retries",
            "1",
        ]
    )
    return args


def summarise(runs: list[dict]) -> dict:
    """Per setting and variant: the median over runs of each run's speedup, and the runs' values."""
    summary = {}
    for setting in runs[0]:
        labels = [k for k in runs[0][setting] if not k.startswith("_")]
        summary[setting] = {
            label: {
                "speedup": median(run[setting][label]["speedup"] for run in runs),
                "runs": [run[setting][label]["speedup"] for run in runs],
                "kernel_speedup": median(run[setting][label]["kernel_speedup"] for run in runs),
                "kernel_ms": median(run[setting][label]["kernel_ms"] for run in runs),
                # a slow session only adds time: the fastest run is the model's own cost
                "fastest_ms": min(run[setting][label]["median_ms"] for run in runs),
                "fastest_kernel_ms": min(run[setting][label]["kernel_ms"] for run in runs),
                "median_ms": median(run[setting][label]["median_ms"] for run in runs),
            }
            for label in labels
        }
    return summary


def fastest_torchslim(summary: dict, variants: dict) -> str:
    """The torchslim variant on target with the best worst-batch speedup."""
    labels = [k for k, v in variants.items() if k.startswith("torchslim") and v["hit"]]
    return max(labels, key=lambda label: min(entry[label]["speedup"] for entry in summary.values()))


def _profile_in_process(base: Path, pruned: Path, args) -> dict:
    torch.set_num_threads(args.threads)
    return node_times_pair(base, pruned, args.timing.batches, latency.INPUT, args.threads, args.profile_runs)


def measure(name: str, args, workdir: str) -> dict:
    info, paths = in_fresh_process(latency.build_and_save, name, args.timing, workdir)
    runs = []
    for repeat in range(args.repeats):
        log(f"{name}: timing run {repeat + 1} of {args.repeats} (fresh process)")
        runs.append(in_fresh_process(latency._time_in_process, paths, args.timing))
    summary = summarise(runs)
    best = fastest_torchslim(summary, info)
    log(f"{name}: node profiles of unpruned vs {best}")
    profiles = [
        in_fresh_process(_profile_in_process, paths["unpruned"], paths[best], args)
        for _ in range(args.repeats)
    ]
    return {
        "variants": info,
        "summary": summary,
        "profiled": best,
        "profile": fastest_profile(profiles),
        "runs": runs,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    payload = {
        "benchmark": "P2 at 2.0x",
        "machine": machine_info(args.threads),
        "input_size": latency.INPUT,
        "goal": GOAL,
        "settings": {
            "repeats": args.repeats,
            "rounds": args.rounds,
            "profile_runs": args.profile_runs,
            "threads": args.threads,
        },
        "models": {},
    }
    return measure_each_model(
        payload,
        args.models,
        lambda name, workdir: measure(name, args, workdir),
        args.output,
        args.threads,
        prefix="torchslim-p2r-",
    )


if __name__ == "__main__":
    main()
