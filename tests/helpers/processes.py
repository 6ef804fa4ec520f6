"""Running torchslim as a real subprocess in tests (single-threaded, so parallel processes do not thrash)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchslim(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torchslim", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        cwd=REPO,
    )


def popen_torchslim(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torchslim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=REPO,
    )


def write_config(
    path: Path, checkpoint_path: Path, *, epochs: int = 3, start_epoch: int = 1, **train
) -> Path:
    """A seed-schema config for the tiny model: uniform pruning -40% MACs at ``start_epoch``."""
    config = {
        "version": 1.0,
        "pruners": {"pruner_1": {"class": "StructurePruner", "criterions": {"*": "l1_norm"}, "round_to": 2}},
        "strategies": {
            "uniform": {
                "class": "UniformPruneStrategy",
                "pruner": "pruner_1",
                "start_epoch": start_epoch,
                "target_ratio": 0.4,
                "pruned_params": ".*",
            }
        },
        "compressor": {"epoch": epochs, "checkpoint_path": str(checkpoint_path), "strategies": ["uniform"]},
        "train": {"batch_size": 32, "lr": 0.1, "lr_strategy": "cosine_decay", "num_workers": 0, **train},
    }
    path.write_text(yaml.safe_dump(config))
    return path
