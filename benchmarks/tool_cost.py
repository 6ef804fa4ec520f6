"""P3, tool cost: wall time from a built model to a pruned model at a 50% MACs target (within 1%).

torchslim (``torchslim.prune``: trace, score, plan to the target, cut a copy)
against Torch-Pruning's bisection (every try rebuilds its dependency graph and
prunes a fresh copy), ResNet34 and MobileNetV2 at 224. Runs are interleaved
(torchslim, Torch-Pruning, torchslim, ...), medians reported. Also: Torch-Pruning's
graph build + one prune step at the ratio its bisection found (no search), and
where torchslim's time goes (phase by phase).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from common import fresh_model, log, machine_info, tp_prune, tp_prune_once, ts_prune, write_result

MODELS = ("resnet34", "mobilenet_v2")


def phases(model, input_size: int, target: float, round_to: int) -> dict[str, float]:
    """Seconds per phase of ``torchslim.prune`` (the same steps, timed one by one)."""
    from torchslim.graph import apply_plan, build_groups, select_groups, trace_channels
    from torchslim.pruning.planner import plan_for_target
    from torchslim.pruning.prune import rank_units

    example = torch.randn(1, 3, input_size, input_size)
    times = {}
    clock = time.perf_counter
    t0 = clock()
    graph, _ = trace_channels(model, example)
    t1 = clock()
    group_set = build_groups(graph)
    select_groups(group_set, model, None)
    t2 = clock()
    scores = rank_units(group_set, model, "l1_norm")
    t3 = clock()
    plan = plan_for_target(group_set, scores, target, round_to)
    t4 = clock()
    pruned = copy.deepcopy(model)
    t5 = clock()
    apply_plan(pruned, group_set, plan.mask)
    t6 = clock()
    times.update(
        {
            "trace (torch.fx + shape propagation)": t1 - t0,
            "groups": t2 - t1,
            "l1 scores": t3 - t2,
            "plan search (bisect + nudge)": t4 - t3,
            "deepcopy (inplace=False)": t5 - t4,
            "surgery (apply_plan)": t6 - t5,
        }
    )
    return times


def run_model(name: str, args) -> dict:
    input_size, target = 224, args.target
    ts_times, tp_times, tp_step_times = [], [], []
    ts_hit = tp_hit = None
    tp_ratio = None
    for repeat in range(args.repeats):
        model = fresh_model(name)
        pruned = ts_prune(model, input_size, target, round_to=args.round_to)
        ts_times.append(pruned.seconds)
        ts_hit, ts_left = pruned.hit, pruned.macs_left
        if repeat < args.tp_repeats:
            model = fresh_model(name)
            peer = tp_prune(model, input_size, target, round_to=None)
            tp_times.append(peer.seconds)
            tp_hit, tp_left, tp_tries = peer.hit, peer.macs_left, peer.tries
            tp_ratio = _tp_ratio_for(peer, model)
        model = fresh_model(name)
        started = time.perf_counter()
        tp_prune_once(model, torch.randn(1, 3, input_size, input_size), tp_ratio or 0.3, None)
        tp_step_times.append(time.perf_counter() - started)
    breakdown = [
        phases(fresh_model(name), input_size, target, args.round_to) for _ in range(args.phase_repeats)
    ]
    result = {
        "torchslim_seconds": statistics.median(ts_times),
        "torchslim_min_seconds": min(ts_times),
        "torchslim_runs": ts_times,
        "torchslim_macs_left": ts_left,
        "torchslim_hit": ts_hit,
        "torch_pruning_bisection_seconds": statistics.median(tp_times),
        "torch_pruning_runs": tp_times,
        "torch_pruning_tries": tp_tries,
        "torch_pruning_macs_left": tp_left,
        "torch_pruning_hit": tp_hit,
        "torch_pruning_one_step_seconds": statistics.median(tp_step_times),
        "speedup_vs_bisection": statistics.median(tp_times) / statistics.median(ts_times),
        "speedup_vs_one_step": statistics.median(tp_step_times) / statistics.median(ts_times),
        "phases_median_seconds": {k: statistics.median(b[k] for b in breakdown) for k in breakdown[0]},
    }
    log(
        f"{name}: torchslim {result['torchslim_seconds']:.2f} s "
        f"(min {min(ts_times):.2f} s, MACs left {ts_left:.2%}), "
        f"Torch-Pruning bisection {result['torch_pruning_bisection_seconds']:.2f} s "
        f"({tp_tries} tries, MACs left {tp_left:.2%}), "
        f"one TP step {result['torch_pruning_one_step_seconds']:.2f} s"
    )
    for phase, seconds in result["phases_median_seconds"].items():
        log(f"    {phase}: {seconds:.3f} s")
    return result


def _tp_ratio_for(peer, model) -> float | None:
    """Torch-Pruning's kept fraction of the first conv's channels: the ratio its bisection settled on."""
    for module, original in zip(peer.model.modules(), model.modules(), strict=False):
        if (
            isinstance(module, torch.nn.Conv2d)
            and module.groups == 1
            and module.out_channels != original.out_channels
        ):
            return 1.0 - module.out_channels / original.out_channels
    return None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=16, help="torchslim's alignment")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tp-repeats", type=int, default=2)
    parser.add_argument("--phase-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    payload = {
        "benchmark": "P3 tool cost",
        "machine": machine_info(args.threads),
        "settings": {k: v for k, v in vars(args).items() if k != "models"},
        "models": {},
    }
    for name in args.models:
        payload["models"][name] = run_model(name, args)
        write_result("tool_cost", payload)
    return payload


if __name__ == "__main__":
    main()
