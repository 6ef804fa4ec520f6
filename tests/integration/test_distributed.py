"""Data-parallel runs under torchrun (2 processes, gloo on CPU): fine-tuning trains, rank 0 checkpoints, and
its distributed evaluation equals a single-process evaluation of the same eval model; strategies that
decide from one process's measurements refuse to run."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import TINY_MODEL
from tests.helpers.configs import (
    auto_strategy,
    compression_config,
    sa_controller,
    sensitive_strategy,
    uniform_strategy,
    write_config,
)
from tests.helpers.data import write_fashion_mnist
from tests.helpers.processes import torchrun, torchslim
from torchslim.engine import read_jsonl


def test_torchrun_two_processes_match_single_process_eval(tmp_path, tiny_fmnist):
    config = write_config(
        tmp_path / "config.yaml", compression_config(tmp_path / "ckpt", epochs=2, train={"lr": 0.1})
    )
    result = torchrun(
        "-m",
        "torchslim",
        "compress",
        "--config",
        str(config),
        "--model",
        TINY_MODEL,
        "--data",
        tiny_fmnist,
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    summary = json.loads(lines[0])
    assert summary["epochs_run"] == [0, 1] and len(summary["events"]) == 1
    records = read_jsonl(tmp_path / "ckpt" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1]  # one writer: no duplicated records
    eval_model = str(tmp_path / "ckpt" / "1" / "eval_model")
    single = torchslim(
        "eval", "--model-path", eval_model, "--model", TINY_MODEL, "--data", tiny_fmnist, "--json"
    )
    assert single.returncode == 0, single.stderr
    evaluated = json.loads(single.stdout)
    assert evaluated["samples"] == 128
    assert evaluated["top1"] == records[-1]["top1"]
    assert evaluated["top5"] == records[-1]["top5"]


# Strategies that decide from measurements one process takes: under torchrun each rank would measure
# on its own data shard and prune to another architecture.
REFUSED = {
    "SensitivePruneStrategy": ({"sensitive": sensitive_strategy()}, {}),
    "AutoPruneStrategy": (
        {"auto": auto_strategy()},
        {"controllers": {"sa": sa_controller(max_iter_number=2)}},
    ),
    "latency-aware pruning": ({"uniform": uniform_strategy(start_epoch=0)}, {}),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_torchrun_refuses_strategies_that_decide_on_one_process(what, tmp_path):
    strategies, sections = REFUSED[what]
    align = {"pruners.pruner_1.align": "latency"} if what.startswith("latency") else {}
    data = f"fashion-mnist:{write_fashion_mnist(tmp_path / 'fmnist', 32, 16)}"
    config = compression_config(
        tmp_path / "ckpt",
        strategies=strategies,
        model=TINY_MODEL,
        data=data,
        train={"input_size": 16, "batch_size": 8},
        sections=sections,
        changes=align,
    )
    path = write_config(tmp_path / "refused.yaml", config)
    logs = tmp_path / "logs"
    # A slower rank gets a second to fail on its own before the agent stops it.
    command = ["-m", "torchslim", "compress", "--config", str(path), "--device", "cpu"]
    result = torchrun("--log-dir", str(logs), "--redirects", "2", *command, monitor_interval=1.0)
    assert result.returncode != 0
    (name,) = strategies
    expected = f"torchslim compress: error: strategies.{name}: {what}"
    rank_errors = sorted(logs.rglob("stderr.log"))
    assert len(rank_errors) == 2  # one per rank
    for log in rank_errors:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        assert lines[-1].startswith(expected) and "does not run under torchrun" in lines[-1], lines[-3:]
        assert [line for line in lines if "error" in line] == lines[-1:], lines
        assert "Traceback" not in log.read_text()
    # The first rank to fail exited with the config-error code; a rank stopped by the agent after that
    # (SIGTERM) had printed the same error already.
    assert re.search(r"Root Cause.*?exitcode\s*:\s*2\b", result.stderr, re.S), result.stderr[-3000:]
    assert set(re.findall(r"exitcode\s*:\s*(-?\d+)", result.stderr)) <= {"2", "-15"}
    assert not list((tmp_path / "ckpt").glob("[0-9]*"))  # nothing trained, nothing saved
