"""Timing: statistics of the samples, interleaved rounds, thread settings (on a fake clock: no wall-clock claims)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tests.helpers.models import FeatureNet, calibrate
from torchslim.export import (
    OrtModel,
    TimingResult,
    export_onnx,
    interleaved_order,
    ort_callable,
    speedup,
    time_callable,
    time_interleaved,
    torch_callable,
    torch_threads,
)
from torchslim.export.timing import robust_ms


def test_robust_ms_is_the_fast_end():
    assert robust_ms([10.0, 1.0, 1.1, 1.2, 50.0]) == 1.1


def sleeper(ms: float):
    def fn() -> None:
        time.sleep(ms / 1000.0)

    return fn


def test_time_callable_sane():
    result = time_callable(sleeper(2), warmup=1, runs=10)
    assert isinstance(result, TimingResult)
    assert result.runs == 10 and len(result.samples_ms) == 10
    assert 1.9 <= result.min_ms <= result.median_ms <= result.p90_ms
    assert result.min_ms <= result.mean_ms
    assert result.median_ms < 50


def test_time_interleaved_speedup():
    results = time_interleaved({"slow": sleeper(4), "fast": sleeper(2)}, warmup=1, rounds=15)
    slow, fast = results["slow"], results["fast"]
    assert slow.runs == fast.runs == 15
    assert slow.median_ms > fast.median_ms
    assert 0.5 < speedup(slow, fast) < 4
    assert speedup(fast, slow) < 1


def test_interleaving_order_rotates():
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "AB"}
    time_interleaved(fns, warmup=0, rounds=4)
    assert calls == list("ABBAABBA")

    calls.clear()
    fns3 = {name: (lambda n=name: calls.append(n)) for name in "ABC"}
    time_interleaved(fns3, warmup=1, rounds=3)
    assert calls == list("ABC" + "ABCBCACAB")  # a warmup round, then the timed rounds from round 0
    assert interleaved_order(["A", "B", "C"], 4) == ["B", "C", "A"]


def test_timing_argument_checks():
    with pytest.raises(ValueError):
        time_callable(lambda: None, runs=0)
    with pytest.raises(ValueError):
        time_interleaved({}, rounds=3)
    r = TimingResult.from_samples([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    assert r.median_ms == 6.0 and r.min_ms == 1.0 and r.p90_ms == pytest.approx(10.0)


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_torch_and_ort_callables_agree(tmp_path):
    model = calibrate(FeatureNet(width=4), (4, 3, 8, 8))
    example = torch.randn(2, 3, 8, 8)
    target = tmp_path / "m.onnx"
    export_onnx(model, example, target)

    run_torch = torch_callable(model, example, threads=1)
    out = run_torch()
    assert not out.requires_grad
    run_ort = ort_callable(OrtModel(target, threads=1), example.numpy())
    np.testing.assert_allclose(run_ort(), out.numpy(), rtol=1e-3, atol=1e-4)
    results = time_interleaved({"torch": run_torch, "ort": run_ort}, warmup=1, rounds=3)
    assert all(r.runs == 3 and r.median_ms > 0 for r in results.values())
