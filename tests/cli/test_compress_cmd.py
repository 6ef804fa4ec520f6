"""``torchslim compress``: a config error is one line, exit 2, nothing written; flags override the config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.cli import run_main
from tests.helpers.configs import sequential_model_config, write_config
from torchslim.cli.compress_cmd import config_from_args
from torchslim.cli.main import build_parser
from torchslim.errors import ConfigError

BAD_CONFIGS = {
    "unknown_key": ({"train.bogus_key": 1}, "train.bogus_key"),
    "wrong_type": ({"train.batch_size": "many"}, "train.batch_size"),
    "missing_pruner": (
        {"strategies.uniform_pruning_strategy.pruner": None},
        "strategies.uniform_pruning_strategy.pruner",
    ),
    "undefined_pruner": (
        {"strategies.uniform_pruning_strategy.pruner": "pruner_9"},
        "strategies.uniform_pruning_strategy.pruner",
    ),
    "regex_matches_nothing": (
        {"strategies.uniform_pruning_strategy.pruned_params": "no_such_layer.*"},
        "strategies.uniform_pruning_strategy.pruned_params",
    ),
    "target_ratio_one": (
        {"strategies.uniform_pruning_strategy.target_ratio": 1.0},
        "strategies.uniform_pruning_strategy.target_ratio",
    ),
    "target_ratio_zero": (
        {"strategies.uniform_pruning_strategy.target_ratio": 0},
        "strategies.uniform_pruning_strategy.target_ratio",
    ),
    "target_ratio_negative": (
        {"strategies.uniform_pruning_strategy.target_ratio": -0.5},
        "strategies.uniform_pruning_strategy.target_ratio",
    ),
}


def _assert_config_error(code: int, out: str, err: str, key_path: str, ckpt: Path) -> None:
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    assert errors[0].startswith("torchslim compress: error: ") and key_path in errors[0], errors[0]
    assert not ckpt.exists(), "files were written under checkpoint_path"


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_line_exit_2_and_writes_nothing(case, brightness_fmnist, tmp_path, capsys):
    changes, key_path = BAD_CONFIGS[case]
    ckpt = tmp_path / "ckpt"
    config = write_config(tmp_path / "bad.yaml", sequential_model_config(brightness_fmnist, ckpt, **changes))
    for extra in ([], ["--dry-run"]):
        code, out, err = run_main(capsys, ["compress", "--config", str(config), "--json", *extra])
        _assert_config_error(code, out, err, key_path, ckpt)


@pytest.mark.slow  # the in-process test above covers the same; this one adds a real interpreter
def test_regex_matching_nothing_in_a_real_process(brightness_fmnist, tmp_path):
    """Found before training starts, exit 2 (not PruningError's 5 at start_epoch), no traceback."""
    ckpt = tmp_path / "ckpt"
    changes = {"strategies.uniform_pruning_strategy.pruned_params": "no_such_layer.*"}
    config = write_config(tmp_path / "bad.yaml", sequential_model_config(brightness_fmnist, ckpt, **changes))
    done = subprocess.run(
        [sys.executable, "-m", "torchslim", "compress", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    _assert_config_error(done.returncode, done.stdout, done.stderr, "pruned_params", ckpt)
    assert "no_such_layer" in done.stderr and "epoch 0" not in done.stderr


def _args(*argv: str):
    return build_parser().parse_args(["compress", *argv])


def test_seed_flag_spellings_override_config(brightness_fmnist, tmp_path):
    path = write_config(tmp_path / "c.yaml", sequential_model_config(brightness_fmnist, tmp_path / "ckpt"))
    config = config_from_args(
        _args(
            "--config_file",
            str(path),
            "--num_epochs",
            "7",
            "--batch_size",
            "50",
            "--use_gpu",
            "False",
            "--lr",
            "0.3",
            "--lr_strategy",
            "piecewise_decay",
            "--l2_decay",
            "1e-4",
            "--momentum_rate",
            "0.8",
            "--step_epochs",
            "2",
            "5",
            "--model",
            "MobileNetV2",
            "--total_images",
            "1281167",
        )
    )
    assert config.compressor.epoch == 7
    train = config.train
    assert (train.batch_size, train.device, train.lr, train.lr_strategy) == (
        50,
        "cpu",
        0.3,
        "piecewise_decay",
    )
    assert (train.l2_decay, train.momentum_rate, train.step_epochs) == (1e-4, 0.8, [2, 5])
    assert train.model == "MobileNetV2" and train.total_images == 1281167
    assert config_from_args(_args("--config", str(path), "--use_gpu", "True")).train.device == "cuda"
    assert config_from_args(_args("--config", str(path), "--num-epochs", "1")).compressor.epoch == 1
    untouched = config_from_args(_args("--config", str(path)))
    assert (untouched.compressor.epoch, untouched.train.batch_size) == (3, 32)
    with pytest.raises(ConfigError, match="--use_gpu"):
        config_from_args(_args("--config", str(path), "--use_gpu", "True", "--device", "cpu"))


def test_override_flags_apply_to_a_run(brightness_fmnist, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    path = write_config(
        tmp_path / "c.yaml", sequential_model_config(brightness_fmnist, ckpt, **{"train.device": "auto"})
    )
    code, out, err = run_main(
        capsys,
        [
            "compress",
            "--config_file",
            str(path),
            "--num-epochs",
            "1",
            "--batch_size",
            "100",
            "--use_gpu",
            "False",
            "--json",
        ],
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs_run"] == [0]  # compressor.epoch 3 overridden
    assert summary["events"] == []  # the strategy starts at epoch 1: never reached
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["0"]
    resolved = yaml.safe_load((ckpt / "config.resolved.yaml").read_text())
    assert resolved["compressor"]["epoch"] == 1
    assert resolved["train"]["batch_size"] == 100 and resolved["train"]["device"] == "cpu"
    assert "--num-epochs" not in err and "Traceback" not in err


def test_use_gpu_true_without_cuda_is_a_config_error(brightness_fmnist, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    ckpt = tmp_path / "ckpt"
    path = write_config(tmp_path / "c.yaml", sequential_model_config(brightness_fmnist, ckpt))
    code, out, err = run_main(capsys, ["compress", "--config", str(path), "--use_gpu", "True", "--json"])
    assert code == 2 and "CUDA" in err and "Traceback" not in err
    assert not ckpt.exists()
