"""Data-parallel fine-tuning under torchrun (gloo on CPU): it trains, rank 0 checkpoints, and its
distributed evaluation equals a single-process evaluation of the same eval model."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO, TINY_MODEL
from tests.helpers.configs import compression_config, write_config
from tests.helpers.processes import subprocess_env, torchslim
from torchslim.engine import read_jsonl


def test_torchrun_two_processes_match_single_process_eval(tmp_path, tiny_fmnist):
    config = write_config(
        tmp_path / "config.yaml", compression_config(tmp_path / "ckpt", epochs=2, train={"lr": 0.1})
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
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
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=subprocess_env(), cwd=REPO
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
