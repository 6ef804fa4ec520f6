"""Op rules for layers written the way timm writes them: functional calls on a module's own parameters
(a Linear or BatchNorm subclass that re-implements forward), shape reads and asserts, a slice that keeps
the whole channel axis, weight-standardised convs, and timm's untraceable modules kept whole. Each
pattern in a tiny module, pruned and checked by the oracle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers.models import Head, conv_bn
from tests.helpers.oracle import group_of, prune_small
from tests.helpers.timm_like import (
    FlippedConv,
    FunctionalLayers,
    GhostNet,
    MeanVarStdConv,
    StandardisedNet,
    TransformedNet,
)
from torchslim.errors import PruningError
from torchslim.pruning.counting import profile_model
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


class DataDependent(nn.Module):
    """A block whose Python control flow depends on the data: torch.fx cannot trace through it."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if float(x.mean()) > -1e9 else x


class WithDataDependentBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.block = DataDependent(16)
        self.body = conv_bn(16, 32)
        self.tail = conv_bn(32, 32)
        self.head = Head(32)

    def forward(self, x):
        return self.head(self.tail(self.body(self.block(self.stem(x)))))


def test_timms_untraceable_modules_are_kept_whole_instead_of_refusing_the_model():
    timm = pytest.importorskip("timm")
    with pytest.raises(PruningError, match=r"cannot trace .* with torch.fx in block \(DataDependent\): "):
        analyze(WithDataDependentBlock().eval(), torch.randn(1, 3, 16, 16))
    timm.layers.register_notrace_module(DataDependent)
    result, _ = prune_small(WithDataDependentBlock(), target=0.3)
    stem = group_of(result, "stem.0")
    assert not stem.prunable and "unsupported layer DataDependent (block)" in stem.reason
    assert group_of(result, "body.0").prunable and result.model.body[0].out_channels < 32
    # the kept-whole block's own conv is counted, as the MAC counter counts it
    assert result.report.macs_before == profile_model(WithDataDependentBlock().eval(), 16).macs


def test_a_written_out_weight_standardisation_is_one_too():
    result, _ = prune_small(TransformedNet(MeanVarStdConv), target=0.2)
    assert group_of(result, "odd").prunable and not group_of(result, "stem.0").prunable
    assert result.model.odd.out_channels < 32 and result.model.odd.in_channels == 16


def test_a_weight_transform_that_mixes_output_channels_is_not_understood():
    group_set = analyze(TransformedNet(FlippedConv).eval(), torch.randn(1, 3, 16, 16))
    stem = next(g for g in group_set.groups if "stem.0" in g.sources)
    assert not stem.prunable and "unsupported op conv2d" in stem.reason
    assert not any("odd" in g.sources for g in group_set.groups)  # its output channels are not followed


class SamePadded(nn.Module):
    """timm's TensorFlow-style 'same' convolution (padding from Python arithmetic on the input size, which
    fx cannot trace) between two plain conv blocks."""

    def __init__(self):
        super().__init__()
        from timm.layers import Conv2dSame

        self.stem = conv_bn(3, 16)
        self.same = Conv2dSame(16, 32, 3, stride=2)
        self.norm = nn.BatchNorm2d(32)
        self.body = conv_bn(32, 32)
        self.head = Head(32)

    def forward(self, x):
        return self.head(self.body(self.norm(self.same(self.stem(x))).relu()))


def test_timms_same_padding_stays_one_call_and_its_conv_prunes():
    pytest.importorskip("timm")
    result, _ = prune_small(SamePadded(), target=0.3)
    assert group_of(result, "same").prunable and group_of(result, "stem.0").prunable
    assert result.model.same.out_channels < 32 and result.model.same.in_channels < 16  # (the oracle ran)
