"""P2, speed realised: pruned vs unpruned latency at -50% MACs, ONNX Runtime and eager, batch 1 and 8.

Per model (MobileNetV1, MobileNetV2, ResNet34 at 224, 1000 classes) every
variant is timed interleaved with the unpruned model (A B C ... rotated each
round, warm-up first, fixed threads: torch.set_num_threads and ORT
intra_op_num_threads), and the speedup is the median of the per-round ratios.

Variants:

* torchslim uniform l1 with round_to 8 and 16 (``torchslim.prune``);
* torchslim latency-aware, planned for batch 1 and for batch 8
  (``torchslim.latency.prune_for_latency``: per-group alignment read off the
  measured latency table, channels traded between groups to minimise the
  table's estimated ORT latency at the same MACs, from the table of that batch size);
* Torch-Pruning 1.6 L1, uniform ratio bisected to the target, round_to none, 8, 16.

Also measured (``--round-to-sweep``): torchslim at round_to 8, 16 and 32 on ORT,
which is how the default round_to was chosen.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import fresh_model, log, machine_info, macs, tp_prune_cached, ts_prune, write_result

MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet34")
INPUT = 224


def build_variants(name: str, args) -> tuple[dict[str, torch.nn.Module], dict[str, dict]]:
    from torchslim.latency import prune_for_latency

    base = fresh_model(name)
    before = macs(base, INPUT)
    models, info = {"unpruned": base}, {"unpruned": {"macs_left": 1.0, "hit": True}}
    for round_to in args.ts_round_to:
        pruned = ts_prune(base, INPUT, args.target, round_to=round_to)
        models[f"torchslim r{round_to}"] = pruned.model
        info[f"torchslim r{round_to}"] = {"macs_left": pruned.macs_left, "hit": pruned.hit, "seconds": pruned.seconds}
    for batch in [] if args.no_latency_aware else args.batches:
        started = time.perf_counter()
        result = prune_for_latency(base, torch.randn(1, 3, INPUT, INPUT), target_flops=args.target,
                                   runtime="onnxruntime", threads=args.threads, batch_size=batch)  # fmt: skip
        left = result.report.macs_after / result.report.macs_before
        label = f"torchslim latency-aware b{batch}"
        models[label] = result.model
        info[label] = {"macs_left": left, "hit": abs(1 - left - args.target) <= 0.01,
                       "seconds": time.perf_counter() - started, "plan": result.latency.as_dict()}  # fmt: skip
    for round_to in args.tp_round_to:
        label = f"torch-pruning r{round_to or 'none'}"
        pruned = tp_prune_cached(name, base, INPUT, args.target, round_to)
        models[label] = pruned.model
        info[label] = {"macs_left": macs(pruned.model, INPUT) / before, "hit": pruned.hit, "ratio": pruned.ratio}
    return models, info


def kernel_ms(path: Path, batch: int, threads: int, runs: int) -> float:
    """Sum over the graph's nodes of each node's 20th-percentile kernel time (ORT profiler), in ms.

    What the runtime's kernels cost with the scheduler's stalls and the gaps between
    nodes left out: on a busy shared machine the wall-clock ratio is compressed
    towards 1 by per-node waits that do not depend on the model's size.
    """
    import collections
    import json

    import numpy as np
    import onnxruntime as ort

    from torchslim.latency import robust_ms

    with tempfile.TemporaryDirectory(prefix="torchslim-prof-") as profile_dir:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / "p")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.randn(batch, 3, INPUT, INPUT).astype(np.float32)}
        for _ in range(runs + 2):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node = collections.defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            per_node[event["name"]].append(event["dur"] / 1000.0)
    return float(sum(robust_ms(v[2:] or v) for v in per_node.values()))


def time_all(models: dict, args, workdir: Path) -> dict[str, dict]:
    from torchslim.export import torch_threads
    from torchslim.latency import compare_latency, export_for_timing, robust_ms

    with torch_threads(args.threads):
        paths = {label: export_for_timing(m, INPUT, workdir / f"v{i}.onnx") for i, (label, m) in enumerate(models.items())}
    timings = {}
    for runtime in args.runtimes:
        for batch in args.batches:
            rounds = args.rounds if batch == 1 else max(5, args.rounds // 2)
            comparison = compare_latency(models, INPUT, runtime=runtime, batch_size=batch, threads=args.threads,
                                         warmup=3, rounds=rounds, onnx_paths=paths)  # fmt: skip
            base_fast = robust_ms(comparison.samples_ms["unpruned"])
            timings[f"{runtime} b{batch}"] = {
                label: {
                    "median_ms": comparison.median_ms[label],
                    "speedup": comparison.speedup[label],
                    "speedup_q20": base_fast / robust_ms(comparison.samples_ms[label]),
                }
                for label in models
            }
            timings[f"{runtime} b{batch}"]["_rounds"] = rounds
            line = ", ".join(f"{k} x{v['speedup']:.2f}" for k, v in timings[f"{runtime} b{batch}"].items() if k[0] != "_")
            log(f"    {runtime} batch {batch} ({rounds} rounds): {line}")
    # Profiling last: timing runs made in a process after ORT's profiler had run there were
    # slower (MobileNetV2 batch 8: unpruned 31.8 -> 36.0 ms, speedup 1.99x -> 1.89x).
    for batch in args.batches if "onnxruntime" in args.runtimes else ():
        entry = timings[f"onnxruntime b{batch}"]
        runs = max(5, entry["_rounds"] // 2)
        kernels = {label: kernel_ms(paths[label], batch, args.threads, runs) for label in models}
        for label in models:
            entry[label]["kernel_ms"] = kernels[label]
            entry[label]["kernel_speedup"] = kernels["unpruned"] / kernels[label]
    return timings


def measure_model(name: str, args, workdir: str) -> dict:
    """Build ``name``'s variants and time them (what one fresh process does)."""
    torch.set_num_threads(args.threads)
    log(f"{name}: building variants")
    models, info = build_variants(name, args)
    for label, entry in info.items():
        log(f"    {label}: MACs left {entry['macs_left']:.2%}{'' if entry['hit'] else ' (target missed)'}")
    return {"variants": info, "timings": time_all(models, args, Path(workdir))}


def measure_in_fresh_process(name: str, args, workdir: str) -> dict:
    """:func:`measure_model` in a new process.

    A process that had already timed other models timed the next one slower and
    less steadily (MobileNetV1 batch 8 after the round_to sweep: 1.80x, first in a
    fresh process: 1.97x), so every model starts from a clean process.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure_model, name, args, workdir).result()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds at batch 1 (half at batch 8)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "eager"])
    parser.add_argument("--ts-round-to", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--tp-round-to", type=lambda v: None if v == "none" else int(v), nargs="+",
                        default=[None, 8, 16])  # fmt: skip
    parser.add_argument("--no-latency-aware", action="store_true")
    parser.add_argument("--round-to-sweep", action="store_true",
                        help="only torchslim at round_to 8/16/32 on ORT (how the default was chosen)")  # fmt: skip
    parser.add_argument("--output", default="latency", help="results/<output>.json")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.round_to_sweep:
        args.ts_round_to, args.tp_round_to, args.no_latency_aware = [8, 16, 32], [], True
        args.runtimes = ["onnxruntime"]
        if args.output == "latency":
            args.output = "round_to_sweep"
    torch.set_num_threads(args.threads)
    payload = {"benchmark": "P2 latency", "machine": machine_info(args.threads), "input_size": INPUT,
               "settings": {k: v for k, v in vars(args).items() if k != "models"}, "models": {}}  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="torchslim-p2-") as workdir:
        for name in args.models:
            payload["models"][name] = measure_in_fresh_process(name, args, workdir)
            payload["seconds"] = time.perf_counter() - started
            payload["machine_after"] = machine_info(args.threads)
            write_result(args.output, payload)
    return payload


if __name__ == "__main__":
    main()
