"""``report``, ``demo``, ``infer`` and ``bench latency`` all time through ``time_runtimes``, one phase per
runtime, with one thread count for every runtime. No claim on how fast anything runs: every phase the
commands time is recorded, and what they print is checked against it."""

from __future__ import annotations

import json
import math

import pytest

import torchslim.latency.compare as compare
from tests.helpers import TINY_MODEL
from tests.helpers.cli import run_main
from tests.helpers.data import write_fashion_mnist
from torchslim.export import TimingResult
from torchslim.export.pte import executorch_available

SIZE = "32"
# The seed's table times ONNX Runtime, then PyTorch eager, then ExecuTorch when the extra is installed.
EXECUTORCH = executorch_available()
TABLE_PHASES = ["onnxruntime", "eager"] + (["executorch"] if EXECUTORCH else [])


@pytest.fixture
def phases(monkeypatch) -> list[dict]:
    """Every phase timed in this process: its runtime, thread count, rounds and the medians it gave."""
    seen = []
    real = compare._time_phase

    def recorded(models, input_size, settings, plan):
        result = real(models, input_size, settings, plan)
        seen.append({"runtime": settings.runtime, "threads": settings.threads, "result": result})
        return result

    monkeypatch.setattr(compare, "_time_phase", recorded)
    return seen


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data set and a two-epoch demo run on it (the demo's own timing is checked in its own test)."""
    root = tmp_path_factory.mktemp("timing-path")
    data = "fashion-mnist:" + str(write_fashion_mnist(root / "fmnist", 64, 16))
    return {"root": root, "data": data}


def _demo(capsys, world, output: str) -> dict:
    argv = ["demo", "--model", TINY_MODEL, "--data", world["data"], "--output", str(world["root"] / output)]
    argv += ["--train-limit", "32", "--val-limit", "16", "--baseline-epochs", "1", "--finetune-epochs", "1"]
    code, out, err = run_main(capsys, [*argv, "--json"])
    assert code == 0, err
    return json.loads(out)


def test_demo_times_ort_then_eager_with_one_thread(capsys, world, phases):
    rows = _demo(capsys, world, "demo")["rows"]
    assert [p["runtime"] for p in phases] == TABLE_PHASES
    assert {p["threads"] for p in phases} == {1}
    ort, eager = (p["result"] for p in phases[:2])
    assert rows[-1]["label"].endswith("+ int8") and set(eager.median_ms) == {r["label"] for r in rows[:-1]}
    for row in rows:  # the int8 model is an ONNX file: timed on ONNX Runtime only
        assert row["ort_ms"] == ort.median_ms[row["label"]]
        assert row["torch_ms"] == eager.median_ms.get(row["label"])
        assert row["ort_speedup"] == ort.speedup[row["label"]]
        assert row["executorch_ms"] == (
            phases[2]["result"].median_ms.get(row["label"]) if EXECUTORCH else None
        )
    assert rows[0]["ort_speedup"] == rows[0]["torch_speedup"] == 1.0


def test_report_times_ort_then_eager_with_its_threads(capsys, world, phases):
    _demo(capsys, world, "for-report")
    phases.clear()
    run = world["root"] / "for-report" / "pruned"
    argv = ["report", "--run", str(run), "--model", TINY_MODEL, "--threads", "1", "--rounds", "3", "--json"]
    code, out, err = run_main(capsys, argv)
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [(p["runtime"], p["threads"], p["result"].rounds) for p in phases] == [
        (runtime, 1, 3) for runtime in TABLE_PHASES
    ]
    ort = phases[0]["result"]
    assert rows[1]["ort_ms"] == ort.median_ms["final"] and rows[1]["ort_speedup"] == ort.speedup["final"]
    assert "Speedup over baseline" in (run / "report.md").read_text()


def test_infer_times_its_batch_on_ort(capsys, world, phases):
    _demo(capsys, world, "for-infer")
    phases.clear()
    model = world["root"] / "for-infer" / "pruned" / "0" / "eval_model"
    argv = ["infer", "--model-path", str(model), "--data", world["data"], "--limit", "4", "--runs", "3"]
    code, out, err = run_main(capsys, [*argv, "--warmup", "0", "--threads", "1", "--json"])
    assert code == 0, err
    ((phase),) = phases
    assert (phase["runtime"], phase["threads"], phase["result"].batch_size) == ("onnxruntime", 1, 4)
    assert json.loads(out)["ms_per_sample"] == phase["result"].median_ms["model"] / 4


@pytest.mark.parametrize("runtime", ["onnxruntime", "eager"])
def test_bench_latency_times_one_phase_of_its_runtime(capsys, phases, runtime):
    argv = ["bench", "latency", "--model", TINY_MODEL, "--input-size", SIZE, "--target-flops", "0.5"]
    argv += ["--round-to", "2", "--runtime", runtime, "--rounds", "3", "--warmup", "0", "--threads", "1"]
    code, out, err = run_main(capsys, [*argv, "--json"])
    assert code == 0, err
    ((phase),) = phases
    assert (phase["runtime"], phase["threads"]) == (runtime, 1)
    assert json.loads(out)["speedup"] == phase["result"].speedup["pruned"]


def test_phases_run_quiet_and_in_the_order_asked(wide, monkeypatch):
    events = []
    monkeypatch.setattr(compare.time, "sleep", lambda s: events.append(("settle", s)))

    def timed(functions, warmup, rounds, calls_per_round=1):
        events.append(("time", rounds, calls_per_round, compare.gc.isenabled()))
        return {label: TimingResult.from_samples([1.0] * rounds) for label in functions}  # 1 ms a call

    monkeypatch.setattr(compare, "time_interleaved", timed)
    result = compare.time_runtimes({"a": wide, "b": wide}, 32, runtimes=("onnxruntime", "eager"), rounds=2)
    assert list(result) == ["onnxruntime", "eager"]
    # One round probes how long a round takes (2 ms), then the rounds call each model often enough
    # for the phase to last PHASE_MIN_S; no garbage collection while timed.
    calls = math.ceil(compare.PHASE_MIN_S / (2 * 0.002))
    phase = [("settle", compare.PHASE_SETTLE_S), ("time", 1, 1, False), ("time", 2, calls, False)]
    assert events == phase + phase
    assert result["eager"].calls_per_round == calls
    assert compare.gc.isenabled()
    assert result["eager"].threads == result["onnxruntime"].threads == compare.DEFAULT_THREADS


def test_calls_per_round_is_bounded(monkeypatch):
    def timed(functions, warmup, rounds, calls_per_round=1):
        return {label: TimingResult.from_samples([per_call] * rounds) for label in functions}

    monkeypatch.setattr(compare, "time_interleaved", timed)
    per_call = 1e-6  # ms: a call too fast to time alone
    assert compare.calls_per_round({"a": None}, 30, 0) == compare.MAX_CALLS_PER_ROUND
    per_call = 1000.0  # a call longer than the whole phase
    assert compare.calls_per_round({"a": None}, 30, 0) == 1
