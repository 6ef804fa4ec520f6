"""Timing: statistics of the samples, interleaved rounds, thread settings.

What a timed call took comes from a fake clock: no claim depends on how fast this machine is."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import torchslim.export.timing as timing
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


class FakeClock:
    """A perf_counter that only moves when a timed function says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def taking(self, *durations_ms: float):
        """A function whose i-th call takes durations_ms[i % len(durations_ms)] milliseconds."""
        calls = []

        def fn() -> None:
            self.now += durations_ms[len(calls) % len(durations_ms)] / 1000.0
            calls.append(None)

        return fn


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=fake))
    return fake


def test_time_callable_reports_the_statistics_of_its_timed_runs(clock):
    # the warm-up call takes 100 ms and is not timed; the next ten calls take what the cycle says
    result = time_callable(clock.taking(100.0, 3.0, 1.0, 2.0, 1.0, 8.0), warmup=1, runs=10)
    assert isinstance(result, TimingResult)
    assert result.runs == 10
    assert result.samples_ms == pytest.approx([3.0, 1.0, 2.0, 1.0, 8.0, 100.0, 3.0, 1.0, 2.0, 1.0])
    assert result.min_ms == pytest.approx(1.0) and result.median_ms == pytest.approx(2.0)
    assert result.mean_ms == pytest.approx(12.2) and result.p90_ms == pytest.approx(17.2)


def test_time_interleaved_times_each_function_and_speedup_is_the_ratio_of_medians(clock):
    results = time_interleaved(
        {"slow": clock.taking(4.0, 4.0, 5.0), "fast": clock.taking(2.0)}, warmup=1, rounds=5
    )
    slow, fast = results["slow"], results["fast"]
    assert slow.runs == fast.runs == 5
    # slow's first call (4 ms) was the warm-up round; then 4, 5, 4, 4, 5
    assert slow.samples_ms == pytest.approx([4.0, 5.0, 4.0, 4.0, 5.0]) and fast.samples_ms == pytest.approx(
        [2.0] * 5
    )
    assert speedup(slow, fast) == pytest.approx(2.0) and speedup(fast, slow) == pytest.approx(0.5)
    assert speedup(slow, TimingResult.from_samples([0.0])) == float("inf")


def test_a_round_of_several_calls_records_the_mean_call(clock):
    results = time_interleaved(
        {"a": clock.taking(1.0, 3.0), "b": clock.taking(2.0)}, warmup=0, rounds=2, calls_per_round=2
    )
    assert results["a"].samples_ms == pytest.approx([2.0, 2.0]) and results["a"].runs == 2
    assert results["b"].samples_ms == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError, match="calls_per_round must be >= 1"):
        time_interleaved({"a": clock.taking(1.0)}, rounds=1, calls_per_round=0)


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
    with pytest.raises(ValueError, match="runs must be >= 1, got 0"):
        time_callable(lambda: None, runs=0)
    with pytest.raises(ValueError, match="warmup must be >= 0, got -1"):
        time_callable(lambda: None, warmup=-1)
    with pytest.raises(ValueError, match="at least one callable"):
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
    assert all(r.runs == len(r.samples_ms) == 3 and r.min_ms <= r.median_ms for r in results.values())
