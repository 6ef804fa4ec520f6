"""Channel coupling on hand-written models: which layers lose the same channels, which groups stay whole."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.models import Head, conv_bn
from tests.helpers.oracle import NUM_CLASSES, group_of, kept_rows, prune_small


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.a = conv_bn(16, 16)
        self.b = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.c = conv_bn(16, 32)
        self.head = Head(32)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.b(self.a(x)))
        return self.head(self.c(x))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = nn.Conv2d(3, 16, 3, padding=1)
        self.right = nn.Conv2d(3, 24, 3, padding=1)
        self.mix = nn.Conv2d(40, 32, 3, padding=1)
        self.head = Head(32)

    def forward(self, x):
        y = torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], dim=1)
        return self.head(F.relu(self.mix(y)))


class Chunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.out = nn.Conv2d(16, 32, 3, padding=1)
        self.head = Head(32)

    def forward(self, x):
        a, b = torch.chunk(self.conv(x), 2, dim=1)  # a gated linear unit
        return self.head(F.relu(self.out(a * torch.sigmoid(b))))


class FixedSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.p = nn.Conv2d(16, 32, 3, padding=1)
        self.q = nn.Conv2d(16, 32, 3, padding=1)
        self.after = conv_bn(32, 32)
        self.head = Head(32)

    def forward(self, x):
        a, b = torch.split(self.conv(x), 16, dim=1)  # a literal size: it cannot follow pruning
        return self.head(self.after(F.relu(self.p(a) + self.q(b))))


class Shuffle(nn.Module):
    def __init__(self, groups: int = 2):
        super().__init__()
        self.groups = groups
        self.conv = conv_bn(3, 32)
        self.after = conv_bn(32, 32)
        self.head = Head(32)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.size()
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        return self.head(self.after(x))


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 24)
        self.conv = conv_bn(24, 16)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(16 * 2 * 2, 24)
        self.fc2 = nn.Linear(24, NUM_CLASSES)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(self.pool(self.conv(self.stem(x))), 1))))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv_bn(3, 32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(32, 8, 1)
        self.expand = nn.Conv2d(8, 32, 1)
        self.after = conv_bn(32, 32)
        self.head = Head(32)

    def forward(self, x):
        x = self.conv(x)
        scale = torch.sigmoid(self.expand(F.relu(self.reduce(self.pool(x)))))
        return self.head(self.after(x * scale))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=2)
        self.c2 = conv_bn(16, 32)
        self.c3 = conv_bn(32, 32)
        self.head = Head(32)

    def forward(self, x):
        return self.head(self.c3(self.c2(F.relu(self.grouped(self.stem(x))))))


def test_residual_add_couples_the_joined_convs():
    torch.manual_seed(0)
    model = Residual()
    result, _ = prune_small(model)
    joined = group_of(result, "stem.0")
    assert sorted(joined.sources) == ["b.0", "stem.0"]
    assert group_of(result, "a.0").sources == ["a.0"]
    p = result.model
    assert p.stem[0].out_channels == p.b[0].out_channels == p.a[0].in_channels == p.c[0].in_channels
    assert p.stem[1].num_features == p.b[1].num_features == p.stem[0].out_channels
    assert p.stem[0].out_channels < 16
    # The same channels are removed from both sides of the add.
    kept_stem = kept_rows(model.stem[0].weight, p.stem[0].weight)
    kept_a = kept_rows(model.a[0].weight, p.a[0].weight, kept_stem)
    kept_b = kept_rows(model.b[0].weight, p.b[0].weight, kept_a)
    assert kept_b == kept_stem
    assert 0 < len(kept_a) < 16


def test_concat_offsets():
    torch.manual_seed(0)
    model = Concat()
    result, _ = prune_small(model)
    p = result.model
    left = kept_rows(model.left.weight, p.left.weight)
    right = kept_rows(model.right.weight, p.right.weight)
    assert len(left) < 16 and len(right) < 24
    columns = left + [16 + i for i in right]
    assert p.mix.in_channels == len(columns)
    mix_rows = kept_rows(model.mix.weight, p.mix.weight, columns)
    assert torch.equal(p.mix.weight, model.mix.weight[mix_rows][:, columns])
    assert torch.equal(p.left.bias, model.left.bias[left])
    assert torch.equal(p.right.bias, model.right.bias[right])


def test_chunk_prunes_both_halves_alike():
    torch.manual_seed(0)
    model = Chunk()
    result, _ = prune_small(model)
    p = result.model
    kept = kept_rows(model.conv.weight, p.conv.weight)
    half = len(kept) // 2
    assert len(kept) % 2 == 0 and 0 < half < 16
    assert kept[half:] == [i + 16 for i in kept[:half]]  # channel i gates channel i + 16
    assert p.out.in_channels == half
    assert group_of(result, "conv").size == 16  # 16 units of two joined channels


def test_fixed_size_split_is_kept_whole():
    torch.manual_seed(0)
    model = FixedSplit()
    result, _ = prune_small(model, target=0.3)
    group = group_of(result, "conv")
    assert not group.prunable and "split" in group.reason
    assert result.model.conv.out_channels == 32
    assert result.model.p.in_channels == result.model.q.in_channels == 16
    assert group.name in result.report.skipped


@pytest.mark.parametrize("groups", [2, 4])
def test_channel_shuffle(groups):
    torch.manual_seed(0)
    model = Shuffle(groups)
    result, _ = prune_small(model)
    p = result.model
    kept = kept_rows(model.conv[0].weight, p.conv[0].weight)
    per_group = 32 // groups
    assert len(kept) % groups == 0 and 0 < len(kept) < 32
    first = [k for k in kept if k < per_group]
    # The shuffle keeps its group count: every group loses the same positions.
    assert kept == [k + g * per_group for g in range(groups) for k in first]
    assert p.after[0].in_channels == len(kept)


def test_flatten_into_linear_keeps_spatial_blocks():
    torch.manual_seed(0)
    model = FlattenLinear()
    result, _ = prune_small(model)
    p = result.model
    kept_stem = kept_rows(model.stem[0].weight, p.stem[0].weight)
    kept = kept_rows(model.conv[0].weight, p.conv[0].weight, kept_stem)
    assert 0 < len(kept) < 16
    columns = [4 * c + j for c in kept for j in range(4)]  # channel c owns features 4c .. 4c+3
    assert p.fc1.in_features == 4 * len(kept)
    rows = kept_rows(model.fc1.weight, p.fc1.weight, columns)
    assert torch.equal(p.fc1.weight, model.fc1.weight[rows][:, columns])
    assert p.fc2.out_features == NUM_CLASSES


def test_squeeze_and_excitation():
    torch.manual_seed(0)
    model = SqueezeExcite()
    result, _ = prune_small(model)
    assert sorted(group_of(result, "conv.0").sources) == ["conv.0", "expand"]
    assert group_of(result, "reduce").sources == ["reduce"]
    p = result.model
    assert p.conv[0].out_channels == p.expand.out_channels == p.reduce.in_channels == p.after[0].in_channels
    assert p.conv[0].out_channels < 32
    assert p.reduce.out_channels == p.expand.in_channels
    assert kept_rows(model.conv[0].weight, p.conv[0].weight) == kept_rows(
        model.expand.bias[:, None], p.expand.bias[:, None]
    )


def test_grouped_conv_is_kept_whole():
    torch.manual_seed(0)
    model = Grouped()
    result, _ = prune_small(model, target=0.3)
    for layer in ("stem.0", "grouped"):
        group = group_of(result, layer)
        assert not group.prunable
        assert "grouped conv" in group.reason and "groups=2" in group.reason
        assert group.name in result.report.skipped
    p = result.model
    assert (p.grouped.in_channels, p.grouped.out_channels, p.grouped.groups) == (16, 16, 2)
    assert p.stem[0].out_channels == 16 and p.c2[0].in_channels == 16
    assert p.c2[0].out_channels < 32
