"""Never lose work: exact resume after a kill, corrupt newest checkpoint, unwritable checkpoint path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_MODEL
from tests.helpers.configs import compression_config, write_config
from tests.helpers.processes import first_checkpoint_written, kill_when, popen_torchslim, torchslim
from torchslim.engine import load_checkpoint, read_jsonl

TIMING_KEYS = {"images_per_s"}


def faults_config(checkpoint: Path, epochs: int) -> dict:
    """Uniform pruning (-40% MACs) at epoch 1; model and data come from the command line."""
    return compression_config(checkpoint, epochs=epochs, train={"lr": 0.1})


def compress(config: Path, data: str, *extra: str):
    return torchslim(
        "compress", "--config", str(config), "--model", TINY_MODEL, "--data", data, "--json", *extra
    )


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def kill_after_first_checkpoint(config: Path, data: str, checkpoint: Path) -> None:
    process = popen_torchslim("compress", "--config", str(config), "--model", TINY_MODEL, "--data", data)
    kill_when(process, first_checkpoint_written(checkpoint), timeout=180)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_fmnist):
    root = tmp_path_factory.mktemp("straight")
    config = write_config(root / "config.yaml", faults_config(root / "ckpt", epochs=4))
    result = compress(config, tiny_fmnist)
    assert result.returncode == 0, result.stderr
    return root / "ckpt", json.loads(result.stdout)


def test_kill_and_resume_gives_the_same_weights_and_metrics(tmp_path, tiny_fmnist, straight_run):
    straight, straight_summary = straight_run
    config = write_config(tmp_path / "config.yaml", faults_config(tmp_path / "ckpt", epochs=4))
    kill_after_first_checkpoint(config, tiny_fmnist, tmp_path / "ckpt")
    result = compress(config, tiny_fmnist)
    assert result.returncode == 0, result.stderr
    assert "resuming from checkpoint" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["epochs_run"][-1] == 3 and 0 not in summary["epochs_run"]
    assert len(summary["events"]) == 1 and summary["events"][0]["epoch"] == 1  # pruned once, at epoch 1
    resumed_state, _ = load_checkpoint(tmp_path / "ckpt" / "3")
    straight_state, _ = load_checkpoint(straight / "3")
    for key, tensor in straight_state["model"].items():
        assert torch.equal(tensor, resumed_state["model"][key]), key
    assert comparable(read_jsonl(tmp_path / "ckpt" / "metrics.jsonl")) == comparable(
        read_jsonl(straight / "metrics.jsonl")
    )
    assert summary["after"] == straight_summary["after"]


def test_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, tiny_fmnist, straight_run):
    straight, _ = straight_run
    config = write_config(tmp_path / "config.yaml", faults_config(tmp_path / "ckpt", epochs=4))
    assert compress(config, tiny_fmnist).returncode == 0
    newest = tmp_path / "ckpt" / "3" / "model.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    result = compress(config, tiny_fmnist)
    assert result.returncode == 0, result.stderr
    assert f"skipping corrupt checkpoint {newest.parent}" in result.stderr
    assert "resuming from checkpoint" in result.stderr and f"{tmp_path / 'ckpt' / '2'}" in result.stderr
    assert json.loads(result.stdout)["epochs_run"] == [3]
    redone, _ = load_checkpoint(tmp_path / "ckpt" / "3")
    expected, _ = load_checkpoint(straight / "3")
    assert all(torch.equal(t, redone["model"][k]) for k, t in expected["model"].items())


def test_unwritable_checkpoint_path_fails_before_training(tmp_path, tiny_fmnist):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    config = write_config(tmp_path / "config.yaml", faults_config(blocker / "ckpt", epochs=1))
    result = compress(config, tiny_fmnist)
    assert result.returncode == 6
    assert str(blocker / "ckpt") in result.stderr
    assert "epoch 0:" not in result.stderr and "Traceback" not in result.stderr
