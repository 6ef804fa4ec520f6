"""Issue 20's node-by-node profiles (benchmarks/p2_nodes.py): op kinds, MACs from ORT's shapes, shortfalls."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from torch import nn

from torchslim.latency.compare import export_for_timing

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def nodes(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("p2_nodes")


def _conv(inp, weight, out, ms):
    return {"op": "Conv", "input": inp, "weight": weight, "output": out, "ms": ms}


def test_convs_are_told_apart_by_kernel_and_gemm_macs_come_from_the_input(nodes):
    depthwise = _conv([1, 32, 56, 56], [32, 1, 3, 3], [1, 32, 56, 56], 0.1)
    pointwise = _conv([1, 32, 56, 56], [64, 32, 1, 1], [1, 64, 56, 56], 0.1)
    spatial = _conv([1, 3, 224, 224], [16, 3, 3, 3], [1, 16, 112, 112], 0.1)
    gemm = {"op": "Gemm", "input": [8, 1280], "weight": [1000], "output": [8, 1000], "ms": 0.1}
    assert [nodes.node_kind(n) for n in (depthwise, pointwise, spatial, gemm)] == [
        "Conv depthwise",
        "Conv 1x1",
        "Conv 3x3",
        "Gemm",
    ]
    assert nodes.node_macs(pointwise) == 64 * 56 * 56 * 32
    assert nodes.node_macs(depthwise) == 32 * 56 * 56 * 9
    assert nodes.node_macs(gemm) == 8 * 1000 * 1280
    assert nodes.node_macs({"op": "Add", "input": [1, 8], "weight": [], "output": [1, 8], "ms": 0}) == 0


def test_shortfall_is_what_a_node_costs_over_half_its_unpruned_time(nodes):
    base = {
        "a": _conv([1, 32, 8, 8], [64, 32, 1, 1], [1, 64, 8, 8], 1.0),
        "b": _conv([1, 64, 8, 8], [64, 1, 3, 3], [1, 64, 8, 8], 0.4),
    }
    pruned = {
        "a": _conv([1, 32, 8, 8], [32, 32, 1, 1], [1, 32, 8, 8], 0.45),
        "b": _conv([1, 32, 8, 8], [32, 1, 3, 3], [1, 32, 8, 8], 0.35),
        "extra": {"op": "ReorderInput", "input": [], "weight": [], "output": [], "ms": 0.05},
    }
    result = nodes.compare_nodes(base, pruned)
    assert result["base_kernel_ms"] == pytest.approx(1.4)
    assert result["pruned_kernel_ms"] == pytest.approx(0.85)
    worst = result["worst_nodes"][0]
    assert (worst["name"], worst["op"]) == ("b", "Conv depthwise")
    assert worst["shortfall_ms"] == pytest.approx(0.15)
    assert worst["macs_left"] == pytest.approx(0.5)
    assert result["worst_nodes"][1]["shortfall_ms"] == pytest.approx(-0.05)
    assert result["ops"]["ReorderInput"] == {
        "count": 0,
        "base_ms": 0.0,
        "pruned_ms": 0.05,
        "shortfall_ms": 0.05,
    }
    assert list(result["ops"])[0] == "Conv depthwise"  # ordered by shortfall
    assert result["unmatched_pruned_nodes"] == 1


def test_a_real_profile_names_every_node_with_its_shapes(nodes, tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8))
    path = export_for_timing(model, 16, tmp_path / "tiny.onnx")
    times = nodes.node_times(path, batch=2, input_size=16, threads=1, runs=2, warmup=1)
    convs = [n for n in times.values() if n["op"] in nodes.CONVS]
    assert len(convs) == 2
    assert sorted(nodes.node_kind(n) for n in convs) == ["Conv 3x3", "Conv depthwise"]
    assert all(n["ms"] >= 0 and n["output"][0] == 2 for n in convs)


def test_profiles_from_several_processes_keep_each_nodes_fastest_time(nodes):
    def pair(base_ms, pruned_ms):
        return {
            "b1": (
                {"a": _conv([1, 32, 8, 8], [64, 32, 1, 1], [1, 64, 8, 8], base_ms)},
                {"a": _conv([1, 32, 8, 8], [32, 32, 1, 1], [1, 32, 8, 8], pruned_ms)},
            )
        }

    merged = nodes.fastest_profile([pair(1.0, 0.9), pair(1.4, 0.5)])  # the second process: a slow session
    node = merged["b1"]["worst_nodes"][0]
    assert (node["base_ms"], node["pruned_ms"]) == (1.0, 0.5)
    assert merged["b1"]["base_kernel_ms"] == 1.0
