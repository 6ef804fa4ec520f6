"""Latency cost models: the table's sum over a model's layers, and its calibration by whole-model profiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.latency import SyntheticTable, staircase_cost
from torchslim.latency.cost import CalibratedLatencyModel, LatencyModel
from torchslim.latency.layers import layer_configs
from torchslim.pruning.prune import analyze


def test_latency_model_base_matches_table_sum(wide, tmp_path):
    group_set = analyze(wide, torch.randn(1, 3, 32, 32))
    table = SyntheticTable(tmp_path)
    model_latency = LatencyModel(group_set, wide, 32, table)
    expected = sum(staircase_cost(c) for c in layer_configs(wide, 32).values())
    assert model_latency.base() == pytest.approx(expected)


def test_calibrated_model_scales_each_layer_by_its_in_model_factor(wide, tmp_path):
    group_set = analyze(wide, torch.randn(1, 3, 32, 32))
    table = SyntheticTable(tmp_path)
    plain = LatencyModel(group_set, wide, 32, table)
    calibrated = CalibratedLatencyModel(plain)
    unpruned = np.zeros(len(group_set.roots), dtype=bool)
    assert calibrated.base() == pytest.approx(plain.base())  # nothing observed: factor 1
    configs = layer_configs(wide, 32)
    calibrated.observe(
        unpruned, {name: 3.0 * staircase_cost(c) for name, c in configs.items() if name != "fc"}
    )
    expected = sum(staircase_cost(c) * (1.0 if name == "fc" else 3.0) for name, c in configs.items())
    assert calibrated.base() == pytest.approx(expected)
    assert calibrated.factors["stem.0"] == pytest.approx(3.0) and "fc" not in calibrated.factors
