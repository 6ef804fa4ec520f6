"""Latency-aware planning: MACs or latency targets met with aligned channel counts (synthetic runtime)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.latency import SyntheticTable
from torchslim.errors import PruningError
from torchslim.latency.planner import LatencyOptions, LatencyPlanner
from torchslim.pruning.prune import prune


def test_prune_for_latency_hits_the_macs_target_with_aligned_counts(wide, tmp_path):
    example = torch.randn(1, 3, 32, 32)
    result = prune(
        wide,
        example,
        target_flops=0.4,
        verify=True,
        tolerance=0.02,
        planner=LatencyPlanner(LatencyOptions(table=SyntheticTable(tmp_path))),
    )
    assert abs(result.report.flops_reduction - 0.4) <= 0.02
    assert result.report.verified
    assert result.plan_info.blocks == {"conv": 16, "depthwise": 16, "linear": 16}
    assert result.plan_info.estimated_ms < result.plan_info.estimated_base_ms
    for name, (before, after) in result.report.channels.items():
        assert after % 16 == 0 or after == before, name
    assert result.model(example).shape == (1, 10)
    assert wide.stem[0].out_channels == 48  # not in place by default


def test_prune_for_latency_latency_target_and_fixed_align(wide, tmp_path):
    example = torch.randn(1, 3, 32, 32)
    table = SyntheticTable(tmp_path)
    result = prune(
        wide,
        example,
        tolerance=0.05,
        target_flops=None,
        planner=LatencyPlanner(LatencyOptions(align=8, table=table), latency_target=0.4),
    )
    info = result.plan_info
    assert 1 - info.estimated_ms / info.estimated_base_ms >= 0.4 - 0.05
    assert info.blocks == {"all": 8}


def test_prune_for_latency_needs_a_target(wide, tmp_path):
    with pytest.raises(PruningError, match="target"):
        prune(
            wide,
            torch.randn(1, 3, 32, 32),
            target_flops=None,
            planner=LatencyPlanner(LatencyOptions(table=SyntheticTable(tmp_path))),
        )
    with pytest.raises(PruningError, match="latency_target"):
        prune(
            wide,
            torch.randn(1, 3, 32, 32),
            target_flops=None,
            planner=LatencyPlanner(LatencyOptions(table=SyntheticTable(tmp_path)), latency_target=1.5),
        )
