"""Node-by-node ONNX Runtime profiles of an unpruned and a pruned model: where a 2x speedup is lost.

Every node of the optimised graph (convs, their fused activations, adds, pooling, layout
reorders, the classifier) is profiled with ORT's profiler in both models; nodes are matched by
name (a pruned model keeps its modules' names, so its exported nodes keep theirs). A node's
*shortfall* is what it costs over half its unpruned time: the milliseconds that stop the model
from running 2x faster. Summed by op type and listed for the worst nodes, with each node's MACs
left, it says whether the loss sits in kernels that do not scale with channels (depthwise,
layout reorders, adds) or outside the kernels (per-node dispatch, which pruning cannot remove).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from torchslim.export.timing import robust_ms
from torchslim.latency.ort_profile import kernel_events, profiled_events

SUFFIX = "_kernel_time"


def node_times(path: Path, batch: int, input_size: int, threads: int, runs: int, warmup: int = 3) -> dict:
    """Node name -> {op, shapes, ms (low quantile over ``runs``)}, in execution order."""
    feed = np.random.randn(batch, 3, input_size, input_size).astype(np.float32)
    events = profiled_events(path, feed, threads, warmup + runs, spinning=True)
    samples: dict[str, list[float]] = {}
    details: dict[str, dict] = {}
    for event in kernel_events(events):
        name = event["name"][: -len(SUFFIX)]
        samples.setdefault(name, []).append(event.get("dur", 0) / 1000.0)
        details.setdefault(name, event.get("args", {}))
    return {
        name: {
            "op": details[name].get("op_name", "?"),
            "input": _shape(details[name], "input_type_shape", 0),
            "weight": _shape(details[name], "input_type_shape", 1),
            "output": _shape(details[name], "output_type_shape", 0),
            "ms": robust_ms(values[warmup:] or values),
        }
        for name, values in samples.items()
    }


def _shape(args: dict, key: str, index: int) -> list[int]:
    shapes = args.get(key, [])
    return list(next(iter(shapes[index].values()))) if len(shapes) > index else []


CONVS = ("Conv", "FusedConv")
MATMULS = ("Gemm", "FusedGemm", "MatMul")


def node_macs(node: dict) -> float:
    """Multiply-accumulates of a conv or Gemm node from the shapes ORT reports (0 for other ops).

    A Gemm's packed weight is not among the shapes ORT reports, so its MACs come from the input's
    last dimension."""
    weight, output = node["weight"], node["output"]
    if node["op"] in CONVS and len(weight) == 4 and len(output) == 4:
        return float(np.prod(output) * np.prod(weight[1:]))
    if node["op"] in MATMULS and node["input"] and output:
        return float(np.prod(output) * node["input"][-1])
    return 0.0


def node_kind(node: dict) -> str:
    """The op type, with convs told apart by what their kernels do: depthwise, 1x1 or spatial."""
    weight = node["weight"]
    if node["op"] not in CONVS or len(weight) != 4:
        return node["op"]
    if weight[1] == 1 and node["input"] and node["input"][1] > 1:
        return "Conv depthwise"
    return "Conv 1x1" if weight[2:] == [1, 1] else f"Conv {weight[2]}x{weight[3]}"


def compare_nodes(base: dict, pruned: dict) -> dict:
    """Per-op and per-node times of ``pruned`` against ``base`` (both from :func:`node_times`)."""
    ops: dict[str, dict] = {}
    nodes = []
    for name, node in base.items():
        other = pruned.get(name)
        pruned_ms = other["ms"] if other else 0.0
        op = ops.setdefault(node_kind(node), {"count": 0, "base_ms": 0.0, "pruned_ms": 0.0})
        op["count"] += 1
        op["base_ms"] += node["ms"]
        op["pruned_ms"] += pruned_ms
        macs = node_macs(node)
        nodes.append(
            {
                "name": name,
                "op": node_kind(node),
                "base_ms": node["ms"],
                "pruned_ms": pruned_ms,
                "shortfall_ms": pruned_ms - node["ms"] / 2,
                "macs_left": node_macs(other) / macs if other and macs else None,
                "base_shape": node["output"],
                "pruned_shape": other["output"] if other else [],
            }
        )
    unmatched = {name: node for name, node in pruned.items() if name not in base}
    for node in unmatched.values():
        op = ops.setdefault(node_kind(node), {"count": 0, "base_ms": 0.0, "pruned_ms": 0.0})
        op["pruned_ms"] += node["ms"]
    for op in ops.values():
        op["shortfall_ms"] = op["pruned_ms"] - op["base_ms"] / 2
    nodes.sort(key=lambda node: -node["shortfall_ms"])
    return {
        "base_kernel_ms": sum(n["ms"] for n in base.values()),
        "pruned_kernel_ms": sum(n["ms"] for n in pruned.values()),
        "ops": dict(sorted(ops.items(), key=lambda item: -item[1]["shortfall_ms"])),
        "worst_nodes": nodes[:10],
        "nodes": len(base),
        "unmatched_pruned_nodes": len(unmatched),
    }


def node_times_pair(
    base_path: Path, pruned_path: Path, batches, input_size: int, threads: int, runs: int
) -> dict[str, tuple[dict, dict]]:
    """Per batch size, :func:`node_times` of both models (fewer runs at larger batches)."""
    result = {}
    for batch in batches:
        count = runs if batch == 1 else max(5, runs // 4)
        result[f"b{batch}"] = (
            node_times(base_path, batch, input_size, threads, count),
            node_times(pruned_path, batch, input_size, threads, count),
        )
    return result


def fastest_profile(pairs: list[dict[str, tuple[dict, dict]]]) -> dict:
    """:func:`compare_nodes` per batch size of profiles from several processes, each node's fastest
    time kept: a session can run slow for its whole life (benchmarks/session_states.py), and a slow
    state only adds time."""
    return {
        batch: compare_nodes(*(_fastest([pair[batch][side] for pair in pairs]) for side in (0, 1)))
        for batch in pairs[0]
    }


def _fastest(profiles: list[dict]) -> dict:
    merged = {name: dict(node) for name, node in profiles[0].items()}
    for profile in profiles[1:]:
        for name, node in profile.items():
            if name in merged:
                merged[name]["ms"] = min(merged[name]["ms"], node["ms"])
    return merged
