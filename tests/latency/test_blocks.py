"""Channel blocks: found in a runtime's latency staircase, and per group the largest block of its members."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers.latency import SyntheticTable
from torchslim.latency.blocks import block_from_latencies, detect_blocks, group_blocks
from torchslim.pruning.prune import analyze


@pytest.mark.parametrize("block", [8, 16, 32])
def test_block_from_latencies_finds_the_staircase(block):
    rng = np.random.default_rng(0)
    latencies = {
        c: 0.1 + 0.01 * math.ceil(c / block) * block + rng.normal(0, 1e-4) for c in range(64, 161, 4)
    }
    latencies[100] *= 3  # one noisy sample does not change the answer
    assert block_from_latencies(latencies) == block


def test_block_from_latencies_smooth_curve_is_block_one():
    assert block_from_latencies({c: 0.1 + 0.01 * c for c in range(64, 161, 4)}) in (1, 4)


def test_detect_blocks_reads_the_synthetic_runtime(tmp_path):
    assert detect_blocks(SyntheticTable(tmp_path, block=16), passes=1) == {
        "conv": 16,
        "depthwise": 16,
        "linear": 16,
    }
    assert detect_blocks(SyntheticTable(tmp_path / "b8", block=8), passes=1)["conv"] == 8


def test_group_blocks_take_the_largest_member_block(wide):
    group_set = analyze(wide, torch.randn(1, 3, 32, 32))
    blocks = group_blocks(group_set, {"conv": 8, "depthwise": 16, "linear": 1})
    by_source = {group_set.groups[g].sources[0]: b for g, b in blocks.items()}
    assert by_source["stem.0"] == 16  # feeds the depthwise conv
    assert by_source["a.0"] == 8
