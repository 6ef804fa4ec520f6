"""What the tracer sees: opaque functions and ops, shared modules, spatial ids, train-only branches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.models import Head, conv_bn
from tests.helpers.oracle import NUM_CLASSES, group_of, prune_small
from torchslim.errors import PruningError
from torchslim.pruning.prune import analyze, prune


@torch.fx.wrap
def mystery_channel_op(x: torch.Tensor) -> torch.Tensor:
    """Reverses the channel order: a channel mapping the tracer cannot see into."""
    return x.flip(1) * 2.0


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.c2 = conv_bn(16, 32)
        self.c3 = conv_bn(32, 32)
        self.head = Head(32)

    def forward(self, x):
        return self.head(self.c3(self.c2(mystery_channel_op(self.stem(x)))))


class Fourier(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.c2 = conv_bn(16, 32)
        self.c3 = conv_bn(32, 32)
        self.head = Head(32)

    def forward(self, x):
        return self.head(self.c3(self.c2(torch.fft.fft2(self.stem(x)).abs())))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = conv_bn(16, 32)
        self.head = Head(32)

    def forward(self, x):
        x = F.relu(self.shared(self.stem(x)))
        x = F.relu(self.shared(x))
        return self.head(self.c3(x))


def test_unsupported_wrapped_function_blocks_its_inputs():
    torch.manual_seed(0)
    model = Wrapped()
    result, _ = prune_small(model, target=0.3)
    group = group_of(result, "stem.0")
    assert not group.prunable
    assert "mystery_channel_op" in group.reason and "unsupported" in group.reason
    assert result.model.stem[0].out_channels == 16
    assert result.model.c2[0].in_channels == 16
    assert result.model.c2[0].out_channels < 32


def test_unsupported_torch_op_names_the_op():
    torch.manual_seed(0)
    model = Fourier()
    result, _ = prune_small(model, target=0.3)
    group = group_of(result, "stem.0")
    assert not group.prunable and "fft" in group.reason
    assert result.model.stem[0].out_channels == 16


def test_shared_module_called_twice():
    torch.manual_seed(0)
    model = Shared()
    result, _ = prune_small(model, target=0.3)
    assert sorted(group_of(result, "shared").sources) == ["shared", "stem.0"]
    p = result.model
    assert p.stem[0].out_channels == p.shared.in_channels == p.shared.out_channels == p.c3[0].in_channels
    assert p.shared.out_channels < 16


@torch.fx.wrap
def rowwise_op(x: torch.Tensor) -> torch.Tensor:
    """Opaque to the tracer; applied to a permuted tensor, its fresh ids run along a spatial axis."""
    return x * 2.0


class SpatialIds(nn.Module):
    """The pattern that crashes maxvit_t: ids varying over H reach a global pool and a Flatten."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.c2 = conv_bn(16, 32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x):
        x = self.c2(self.stem(x))
        x = rowwise_op(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        return self.fc(self.flatten(self.pool(x)))


def test_spatially_varying_ids_through_global_pool():
    torch.manual_seed(0)
    group_set = analyze(SpatialIds().eval(), torch.randn(1, 3, 16, 16))
    c2 = next(g for g in group_set.groups if "c2.0" in g.sources)
    assert not c2.prunable  # blocked (by the opaque op), and the pool after it no longer crashes
    assert next(g for g in group_set.groups if "stem.0" in g.sources).prunable


class TrainOnlyBranch(nn.Module):
    """Like googlenet / inception_v3: an auxiliary head that only runs in train mode."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.body = conv_bn(16, 32)
        self.head = Head(32)
        self.aux = Head(16)

    def forward(self, x):
        x = self.stem(x)
        out = self.head(self.body(x))
        if self.training:
            return out, self.aux(x)
        return out


def test_train_only_branch_is_resized():
    torch.manual_seed(0)
    model = TrainOnlyBranch()
    result, x = prune_small(model, target=0.4)
    assert result.model.stem[0].out_channels < 16
    main_out, aux_out = result.model.train()(x)
    assert aux_out.shape == (2, NUM_CLASSES)


class LargeInputAux(nn.Module):
    """Like inception_v3: the train-only auxiliary head needs a larger input than the network."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.body = conv_bn(16, 32)
        self.head = Head(32)
        self.aux_pool = nn.AvgPool2d(5, stride=3)
        self.aux_conv = nn.Conv2d(16, 8, 5)
        self.aux_fc = nn.Linear(8, NUM_CLASSES)

    def forward(self, x):
        x = self.stem(x)
        out = self.head(self.body(x))
        if self.training:
            return out, self.aux_fc(torch.flatten(self.aux_conv(self.aux_pool(x)), 1))
        return out


def test_train_only_branch_too_small_for_the_input_is_refused_with_its_layers_named():
    """Pruning only the eval graph would leave the aux head unresized and the model broken in training."""
    torch.manual_seed(0)
    model = LargeInputAux().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert model(x).shape == (2, NUM_CLASSES)  # eval mode works at 8x8
    with pytest.raises(RuntimeError):
        model.train()(x)  # train mode does not, before any pruning
    model.eval()
    with pytest.raises(
        PruningError, match=r"training-only layers of LargeInputAux \(aux_conv, aux_fc, aux_pool\)"
    ):
        prune(model, x, target_flops=0.3, round_to=1)


def test_train_only_branch_is_resized_at_a_size_it_runs_at():
    torch.manual_seed(0)
    model = LargeInputAux().eval()
    x = torch.randn(2, 3, 17, 17)  # the aux head's conv sees exactly 5x5
    result = prune(model, x, target_flops=0.3, round_to=1, verify=True)
    assert result.report.verified
    assert result.model.aux_conv.in_channels == result.model.stem[0].out_channels < 16
    aux_out = result.model.train()(x)[1]
    assert aux_out.shape == (2, NUM_CLASSES)


class TrainOnlyNoise(nn.Module):
    """A training-only step that adds no layer and cannot run on these inputs (a mis-shaped noise term):
    the eval graph has every layer, so pruning goes on from it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.head = Head(16)
        self.register_buffer("noise", torch.ones(5))

    def forward(self, x):
        x = self.stem(x)
        if self.training:
            x = x * self.noise
        return self.head(x)


def test_a_failing_training_step_without_layers_of_its_own_prunes_from_the_eval_graph():
    torch.manual_seed(0)
    model = TrainOnlyNoise().eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(RuntimeError):
        model.train()(x)
    model.eval()
    result = prune(model, x, target_flops=0.25, round_to=1, verify=True)
    assert result.report.verified and result.model.stem[0].out_channels < 16


class OptionalMask(nn.Module):
    """An optional argument fx turns into an input, so the traced graph takes the branch that reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.head = Head(16)

    def forward(self, x, mask=None):
        x = self.stem(x)
        if mask is not None:
            x = x * mask.view(1, 1, 8, 8)
        return self.head(x)


def test_a_graph_that_cannot_run_is_refused_naming_the_op_it_failed_at():
    model = OptionalMask().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert model(x).shape == (2, NUM_CLASSES)  # the model itself runs
    with pytest.raises(
        PruningError, match=r"cannot run OptionalMask on input \(2, 3, 8, 8\) at op view of mask: "
    ):
        prune(model, x, target_flops=0.25, round_to=1)
