"""benchmarks/session_states.py and its RESULTS.md writer: slow sessions counted per mode, CPU per wall."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from torch import nn

from torchslim.latency.compare import export_for_timing

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("session_states"), importlib.import_module("md_session_states")


def _process(unpruned_ms, pruned_ms, cpu=(2.0, 2.0)):
    return {
        "unpruned": {"median_ms": unpruned_ms, "cpu_per_wall": cpu[0]},
        "torchslim r16": {"median_ms": pruned_ms, "cpu_per_wall": cpu[1]},
        "_thread_cpus": [0, 1],
    }


def test_a_session_over_1_3x_its_fastest_process_is_slow_and_its_cpu_use_is_kept_apart(bench):
    states, _ = bench
    summary = states.summarise([_process(6.0, 3.0), _process(6.1, 13.0, (2.0, 1.0)), _process(6.2, 3.1)])
    assert summary["unpruned"]["slow"] == 0 and summary["unpruned"]["cpu_per_wall_slow"] is None
    pruned = summary["torchslim r16"]
    assert pruned["slow"] == 1 and pruned["medians_ms"] == [3.0, 13.0, 3.1]
    assert (pruned["cpu_per_wall_normal"], pruned["cpu_per_wall_slow"]) == (2.0, 1.0)


def test_the_section_counts_slow_sessions_per_mode_and_names_the_fewest(bench):
    states, md = bench
    runs = {
        "timing b1": [_process(6.0, 3.0), _process(6.1, 13.0, (2.0, 1.0))],
        "alone b1": [_process(6.0, 3.0), _process(6.1, 3.1)],
    }
    payload = {
        "machine": {"cpu": "test"},
        "seconds": 120,
        "settings": {"model": "mobilenet_v1", "processes": 2},
        "summary": {key: states.summarise(value) for key, value in runs.items()},
    }
    text = "\n".join(md.session_states_section(payload))
    assert "| timing b1 | 0 of 2 (2.00) | 1 of 2 (2.00 / 1.00) |" in text
    assert "Slow sessions in all, per mode and batch: timing b1 1, alone b1 0; fewest: alone b1." in text
    assert "not run" in md.session_states_section(None)[2]


@pytest.mark.parametrize("mode", ["timing", "alone"])
def test_a_process_times_every_model_and_says_where_its_threads_ran(bench, tmp_path, monkeypatch, mode):
    states, _ = bench
    monkeypatch.setattr(states, "INPUT", 8)
    paths = {
        label: export_for_timing(nn.Sequential(nn.Conv2d(3, width, 3)), 8, tmp_path / f"{label}.onnx")
        for label, width in (("unpruned", 8), ("torchslim r16", 4))
    }
    result = states.time_process(paths, mode, batch=1, threads=1, rounds=3)
    assert set(result) == {"unpruned", "torchslim r16", "_thread_cpus"}
    assert all(result[label]["median_ms"] > 0 and result[label]["cpu_per_wall"] > 0 for label in paths)
    assert result["_thread_cpus"] and all(cpu >= 0 for cpu in result["_thread_cpus"])
