"""``torchslim bench latency``: output contract and errors, on a tiny model with few rounds.

No claim on how fast anything runs; the reported medians and speedups are checked against the
timing samples they were computed from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torchslim.latency.compare as compare
from tests.helpers import TINY_MODEL
from tests.helpers.cli import run_main
from tests.helpers.latency import staircase_cost
from tests.helpers.tiny_models import tiny_net
from torchslim.cli import bench_cmd
from torchslim.latency.compare import LatencyComparison, compare_latency, in_fresh_process, steady_rounds
from torchslim.latency.table import LatencyTable
from torchslim.models import save_model
from torchslim.pruning.prune import prune

KEYS = {
    "macs_ratio",
    "latency_base_ms",
    "latency_pruned_ms",
    "speedup",
    "runtime",
    "threads",
    "batch_size",
    "rounds",
    "rounds_used",
}
FAST = ["--input-size", "32", "--rounds", "2", "--warmup", "0", "--threads", "1"]


def record_comparisons(monkeypatch) -> list[LatencyComparison]:
    """Every LatencyComparison the bench command computes in this process, samples included."""
    seen = []

    def compare(*args, **kwargs):
        seen.append(compare_latency(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(bench_cmd, "compare_latency", compare)
    return seen


@pytest.mark.parametrize("runtime", ["onnxruntime", "eager", "executorch"])
def test_bench_latency_json_prunes_and_times(capsys, monkeypatch, runtime):
    comparisons = record_comparisons(monkeypatch)
    argv = ["bench", "latency", "--model", TINY_MODEL, "--target-flops", "0.5", "--round-to", "2"]
    argv += ["--runtime", runtime, "--batch-size", "2", "--json", *FAST, "--rounds", "5"]
    code, out, _ = run_main(capsys, argv)
    assert code == 0
    payload = json.loads(out)
    assert set(payload) == KEYS
    assert payload["runtime"] == runtime and payload["threads"] == 1 and payload["batch_size"] == 2
    assert 0.4 < payload["macs_ratio"] < 0.6
    # Medians over the steady rounds; the speedup is the median of the per-round ratios (not the
    # ratio of the medians), over the same rounds.
    (comparison,) = comparisons
    base, pruned = (np.asarray(comparison.samples_ms[label]) for label in ("unpruned", "pruned"))
    assert len(base) == len(pruned) == payload["rounds"] == 5
    used, _ = steady_rounds(base)
    assert payload["rounds_used"] == int(used.sum()) >= 3
    assert payload["latency_base_ms"] == float(np.median(base[used]))
    assert payload["latency_pruned_ms"] == float(np.median(pruned[used]))
    assert payload["speedup"] == float(np.median(base[used] / pruned[used]))


def test_bench_latency_without_target_times_the_model_alone(capsys):
    code, out, _ = run_main(
        capsys, ["bench", "latency", "--model", TINY_MODEL, "--runtime", "eager", "--json", *FAST]
    )
    payload = json.loads(out)
    assert code == 0 and payload["macs_ratio"] == 1.0
    assert payload["latency_pruned_ms"] is None and payload["speedup"] is None


def test_bench_latency_saved_pruned_model_against_its_base(capsys, tmp_path):
    pruned = prune(tiny_net(), torch.randn(1, 3, 32, 32), target_flops=0.5, round_to=2).model
    save_model(tmp_path / "m", pruned, TINY_MODEL, {}, input_size=32)
    code, out, _ = run_main(
        capsys,
        [
            "bench",
            "latency",
            "--model-path",
            str(tmp_path / "m"),
            "--model",
            TINY_MODEL,
            "--runtime",
            "eager",
            "--json",
            *FAST,
        ],
    )
    assert code == 0
    assert 0.4 < json.loads(out)["macs_ratio"] < 0.6


def test_bench_latency_text_table(capsys):
    code, out, _ = run_main(
        capsys,
        [
            "bench",
            "latency",
            "--model",
            TINY_MODEL,
            "--target-flops",
            "0.5",
            "--round-to",
            "2",
            "--runtime",
            "eager",
            *FAST,
        ],
    )
    assert code == 0 and "unpruned" in out and "pruned" in out and "speedup" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-flops", "1.5"], "--target-flops"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "tpu"], "--device"),
        (["--target-flops", "0.5", "--align", "latency", "--runtime", "executorch"], "--align latency plans"),
    ],
)
def test_bench_latency_bad_arguments_are_one_line_errors(capsys, extra, message):
    code, out, err = run_main(capsys, ["bench", "latency", "--model", TINY_MODEL, *FAST, *extra])
    assert code != 0 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_without_benchmark_prints_help(capsys):
    code, out, _ = run_main(capsys, ["bench"])
    assert code == 2 and "latency" in out


def test_bench_latency_align_latency_calibrates_here_and_times_in_a_fresh_process(
    capsys, tmp_path, monkeypatch
):
    # A synthetic runtime with a channel block of 4 (the tiny model's layers are 16 wide).
    monkeypatch.setattr(LatencyTable, "_measure", lambda self, config: staircase_cost(config, block=4))
    monkeypatch.setattr(LatencyTable, "for_probes", lambda self: self)

    def not_here(*args, **kwargs):
        raise AssertionError("the models were timed in the process that planned them")

    monkeypatch.setattr(compare, "time_interleaved", not_here)  # a spawned process imports its own
    handed_over = []

    def fresh(function, *args, **kwargs):
        handed_over.append(function)
        return in_fresh_process(function, *args, **kwargs)

    monkeypatch.setattr(bench_cmd, "in_fresh_process", fresh)
    argv = ["bench", "latency", "--model", TINY_MODEL, "--target-flops", "0.5", "--align", "latency"]
    argv += ["--latency-cache", str(tmp_path), "--input-size", "32", "--rounds", "1", "--warmup", "0"]
    code, out, err = run_main(capsys, [*argv, "--threads", "1", "--json"])
    assert code == 0, err
    assert handed_over == [compare_latency]
    payload = json.loads(out)
    assert 0.4 < payload["macs_ratio"] < 0.6 and payload["rounds"] == payload["rounds_used"] == 1
    # One round: the median of the per-round ratios is that round's ratio.
    assert payload["speedup"] == payload["latency_base_ms"] / payload["latency_pruned_ms"]
