"""The Compressor runs the seed's sensitivity and auto-prune configs on mobilenet_v1 to their targets
(tiny data, one epoch)."""

from __future__ import annotations

import pytest

from tests.helpers import SEED_CONFIGS
from torchslim.compress.compressor import Compressor
from torchslim.config import apply_overrides, load_config

# ---------------------------------------------------------------- generated inputs


# ---------------------------------------------------------------- kill -9, then resume


# ---------------------------------------------------------------- the seed's three configs


# ---------------------------------------------------------------- config errors


# ---------------------------------------------------------------- flags override the config


@pytest.mark.parametrize(
    ("file", "overrides", "low", "high"),
    [
        ("filter_pruning_sen.yaml", {"strategies.sensitive_pruning_strategy.delta_rate": 0.3}, 0.485, 0.515),
        ("auto_prune.yaml", {"controllers.sa_controller.max_iter_number": 3}, 0.48, 0.50),
    ],
)
def test_seed_config_reaches_its_target_on_mobilenet_v1(file, overrides, low, high, tiny_fmnist, tmp_path):
    config = load_config(SEED_CONFIGS / file)
    name = config.compressor.strategies[0]
    small = {
        "train.model": "mobilenet_v1",
        "train.data": tiny_fmnist,
        "train.device": "cpu",
        "train.batch_size": 32,
        "train.train_limit": 32,
        "train.val_limit": 32,
        "train.num_workers": 0,
        "train.lr": 0.01,
        "compressor.epoch": 1,
        "compressor.checkpoint_path": None,
        f"strategies.{name}.eval_rate": 0.5,
        **overrides,
    }
    if "sensitivities_file" in vars(config.strategies[name]):
        small[f"strategies.{name}.sensitivities_file"] = str(tmp_path / "mobilenet_acc_top1_sensitive.data")
    summary = Compressor(apply_overrides(config, small), progress=False, log=lambda message: None).run()
    removed = 1.0 - summary.after.macs / summary.before.macs
    assert low <= removed <= high, f"{file}: removed {removed:.2%}"
    assert summary.events and summary.events[0]["strategy"] == name
