"""Models timed side by side: medians and speedups over the steady rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchslim.latency.compare as compare
from torchslim.errors import ConfigError
from torchslim.export import TimingResult
from torchslim.latency.compare import compare_latency, steady_rounds
from torchslim.pruning.prune import prune


@pytest.mark.parametrize("runtime", ["onnxruntime", "eager"])
def test_compare_latency_structure(wide, runtime):
    pruned = prune(wide, torch.randn(1, 3, 32, 32), target_flops=0.4, round_to=8, tolerance=0.05).model
    result = compare_latency(
        {"base": wide, "pruned": pruned}, 32, runtime=runtime, batch_size=2, threads=1, warmup=1, rounds=3
    )
    assert set(result.median_ms) == {"base", "pruned"} and result.speedup["base"] == 1.0
    assert len(result.samples_ms["base"]) == len(result.samples_ms["pruned"]) == 3
    base, pruned = np.asarray(result.samples_ms["base"]), np.asarray(result.samples_ms["pruned"])
    used, steady = steady_rounds(base)
    assert (result.rounds_used, result.steady) == (int(used.sum()), steady)
    assert result.median_ms == {
        "base": float(np.median(base[used])),
        "pruned": float(np.median(pruned[used])),
    }
    assert result.speedup["pruned"] == float(np.median(base[used] / pruned[used]))
    assert result.as_dict()["runtime"] == runtime and "samples_ms" not in result.as_dict()


def test_compare_latency_uses_the_steady_rounds(wide, monkeypatch):

    # Rounds 3 and 4 ran while the machine was slowed down: the base model took 1.6x as long.
    samples = {"base": [4.0, 4.1, 6.5, 6.4, 4.0], "pruned": [2.0, 2.05, 4.0, 4.0, 2.0]}
    monkeypatch.setattr(
        compare,
        "time_interleaved",
        lambda functions, warmup, rounds, calls_per_round=1: {
            label: TimingResult.from_samples(samples[label]) for label in functions
        },
    )
    result = compare_latency({"base": wide, "pruned": wide}, 32, runtime="eager", rounds=5)
    assert (result.rounds_used, result.steady) == (3, True)
    assert result.speedup["pruned"] == pytest.approx(2.0) and result.median_ms["base"] == pytest.approx(4.0)
    assert result.samples_ms["pruned"] == samples["pruned"]  # every round is kept for the record
    samples.update(
        base=[4.0, 6.5, 6.4, 6.5, 6.6], pruned=[2.0, 4.0, 4.0, 4.0, 4.0]
    )  # mostly slow: all rounds
    result = compare_latency({"base": wide, "pruned": wide}, 32, runtime="eager", rounds=5)
    assert (result.rounds_used, result.steady) == (5, False)
    assert result.speedup["pruned"] == pytest.approx(6.5 / 4.0)


def test_steady_rounds_band():
    used, steady = steady_rounds([10.0, 11.2, 11.3, 10.5])
    assert used.tolist() == [True, True, False, True] and steady
    used, steady = steady_rounds([10.0, 20.0, 20.0])
    assert used.all() and not steady


def test_compare_latency_rejects_unknown_runtime(wide):
    with pytest.raises(ConfigError):
        compare_latency({"base": wide}, 32, runtime="tvm", rounds=1)
