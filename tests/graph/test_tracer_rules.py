"""Op rules for layers written the way timm writes them: functional calls on a module's own parameters
(a Linear or BatchNorm subclass that re-implements forward), shape reads and asserts, and a slice that
keeps the whole channel axis. Each pattern in a tiny module, pruned and checked by the oracle."""

from __future__ import annotations

import torch

from tests.helpers.oracle import group_of, prune_small
from tests.helpers.timm_like import FunctionalLayers, GhostNet, StandardisedNet
from torchslim.pruning.prune import analyze


def test_functional_calls_on_a_modules_own_parameters_are_that_modules_layer():
    model = FunctionalLayers()
    result, _ = prune_small(model, target=0.4)
    for layer in ("c1", "c2", "hidden"):
        assert group_of(result, layer).prunable, group_of(result, layer).reason
    pruned = result.model
    assert pruned.n1.num_features == pruned.c1.out_channels < 16
    assert pruned.n2.num_features == pruned.c2.out_channels == pruned.hidden.in_features < 32
    assert pruned.hidden.out_features == pruned.fc.in_features < 24


def test_a_slice_keeping_the_whole_channel_axis_is_no_cut():
    model = GhostNet()
    result, _ = prune_small(model, target=0.3)
    for index in range(3):
        assert group_of(result, f"blocks.{index}.primary.0").prunable
        assert result.model.blocks[index].primary[0].out_channels < 16


def test_a_slice_dropping_channels_still_blocks_them():
    group_set = analyze(GhostNet(keep=30).eval(), torch.randn(1, 3, 16, 16))
    for index in range(3):
        group = next(g for g in group_set.groups if f"blocks.{index}.primary.0" in g.sources)
        assert not group.prunable and "fixed slice of channels" in group.reason


def test_weight_standardised_convs_lose_output_channels_and_keep_input_channels():
    model = StandardisedNet()
    result, _ = prune_small(model, target=0.25)
    stem, ws = group_of(result, "stem.0"), group_of(result, "ws")
    assert not stem.prunable and "weight-standardised conv ws" in stem.reason
    assert ws.prunable  # through the depthwise standardised conv (per-channel statistics) to a plain conv
    pruned = result.model
    assert pruned.ws.in_channels == 16 and pruned.ws.out_channels < 32
    assert pruned.ws.gain.shape[0] == pruned.ws.out_channels == pruned.dw.out_channels
    assert pruned.dw.gain.shape[0] == pruned.dw.out_channels == pruned.plain[0].in_channels
