"""Reading ONNX Runtime's profiler: kernel times per run and per node, and which layer a node is."""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.export.sessions import create_session, session_options
from torchslim.export.timing import robust_ms
from torchslim.latency.layers import ConvConfig

NODE_OPS = ("Conv", "Gemm", "FusedConv", "FusedGemm", "MatMul")
# Layout conversions ONNX Runtime adds around a lone conv (NCHW <-> its blocked NCHWc layout); inside a
# whole model the blocked layout flows from conv to conv and they are not there, so they are not counted.
BOUNDARY_OPS = {"ReorderInput", "ReorderOutput"}


class CalibrationError(RuntimeError):
    """A profile's nodes could not be matched to the model's layers."""


def profiled_events(
    model: bytes | str | Path, feed: np.ndarray, threads: int, runs: int, *, spinning: bool
) -> list[dict]:
    """The events of ORT's profiler over ``runs`` runs of ``model`` on ``feed``."""
    with tempfile.TemporaryDirectory(prefix="torchslim-profile-") as workdir:
        options = session_options(threads, spinning=spinning, profile_prefix=Path(workdir) / "run")
        session = create_session(model, options)
        inputs = {session.get_inputs()[0].name: feed}
        for _ in range(runs):
            session.run(None, inputs)
        return json.loads(Path(session.end_profiling()).read_text())


def kernel_events(events: list[dict]) -> Iterator[dict]:
    """The per-node kernel-time events of a profile."""
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            yield event


def kernel_ms_per_run(events: list[dict]) -> list[float]:
    """Sum of node kernel times (ms) per ``model_run`` of an ORT profile, layout conversions excluded."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if not starts:
        return []
    totals = [0.0] * len(starts)
    for event in kernel_events(events):
        if event.get("args", {}).get("op_name") in BOUNDARY_OPS:
            continue
        index = int(np.searchsorted(starts, event["ts"], side="right")) - 1
        if index >= 0:
            totals[index] += event.get("dur", 0) / 1000.0
    return totals


def layer_kernel_ms(
    module: nn.Module, example: torch.Tensor, threads: int, warmup: int, repeats: int
) -> float:
    """One layer's own kernel time in ONNX Runtime (ms), from ORT's profiler.

    A one-layer session also pays for the run call and for converting its input and output
    between NCHW and the blocked layout, which a whole model does not pay per layer: so the
    node kernel times are summed run by run without the conversions, and a low quantile kept.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["x"], output_names=["y"])
    events = profiled_events(buffer.getvalue(), example.numpy(), threads, warmup + repeats, spinning=False)
    runs = kernel_ms_per_run(events)[warmup:]
    return robust_ms(runs) if runs else 0.0


@dataclass
class ProfiledNode:
    """One conv or Gemm node of a profiled model: its shapes as ORT reports them and its kernel time."""

    op: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    ms: float


def profile_nodes(
    onnx_path: str | Path, batch: int, input_size: int, threads: int, runs: int = 30, warmup: int = 5
) -> tuple[list[ProfiledNode], float]:
    """The conv/Gemm nodes of ``onnx_path`` in execution order, each with a low quantile of its kernel
    time over ``runs`` runs (ms), and the summed kernel time of all nodes (ms)."""
    feed = np.random.randn(batch, 3, input_size, input_size).astype(np.float32)
    events = profiled_events(Path(onnx_path), feed, threads, warmup + runs, spinning=True)
    per_node: dict[str, list[float]] = {}
    first_seen: dict[str, float] = {}
    details: dict[str, dict] = {}
    for event in kernel_events(events):
        name = event["name"]
        per_node.setdefault(name, []).append(event.get("dur", 0) / 1000.0)
        first_seen.setdefault(name, event["ts"])
        details[name] = event.get("args", {})
    times = {name: robust_ms(values[warmup:] or values) for name, values in per_node.items()}
    nodes = [_node(details[name], times[name]) for name in sorted(per_node, key=first_seen.__getitem__)]
    return [node for node in nodes if node is not None], float(sum(times.values()))


def _node(args: dict, ms: float) -> ProfiledNode | None:
    """The conv/Gemm node an event's ``args`` describe; None for other ops or missing shapes."""
    if args.get("op_name") not in NODE_OPS:
        return None
    inputs = [next(iter(shape.values())) for shape in args.get("input_type_shape", [])]
    outputs = [next(iter(shape.values())) for shape in args.get("output_type_shape", [])]
    if len(inputs) < 2 or not outputs:
        return None
    return ProfiledNode(args["op_name"], tuple(inputs[0]), tuple(inputs[1]), tuple(outputs[0]), ms)


def _fits(node: ProfiledNode, config: ConvConfig, pad: int) -> bool:
    """Whether ``node`` can be ``config``'s layer: same kind, kernel and map size, and channel counts
    equal up to the runtime's padding to its channel block (ORT reports padded blocked shapes)."""

    def close(reported: int, actual: int) -> bool:
        return actual <= reported < actual + pad

    if config.linear:
        return (
            len(node.input_shape) == 2
            and close(node.input_shape[1], config.in_channels)
            and (close(node.output_shape[-1], config.out_channels))
        )
    if len(node.input_shape) != 4 or len(node.weight_shape) != 4:
        return False
    if node.weight_shape[-1] != config.kernel or tuple(node.input_shape[2:]) != (config.height, config.width):
        return False
    if config.depthwise != (node.weight_shape[1] == 1 and node.input_shape[1] > 1):
        return False
    return close(node.input_shape[1], config.in_channels) and close(node.output_shape[1], config.out_channels)


def match_nodes(nodes: list[ProfiledNode], configs: dict[str, ConvConfig], pad: int = 16) -> dict[str, float]:
    """Layer name -> in-model ms: each node goes to the first not-yet-matched layer, in forward
    order, that it fits (execution order follows forward order except between parallel branches)."""
    remaining = list(configs.items())
    matched: dict[str, float] = {}
    for node in nodes:
        for index, (name, config) in enumerate(remaining):
            if _fits(node, config, pad):
                matched[name] = node.ms
                del remaining[index]
                break
        else:
            raise CalibrationError(
                f"profiled {node.op} node {node.input_shape} x {node.weight_shape} fits no layer"
            )
    if remaining:
        raise CalibrationError(f"layer {remaining[0][0]} has no node in the profile")
    return matched
