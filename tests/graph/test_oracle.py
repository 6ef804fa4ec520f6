"""The oracle's comparison: float32 rounding that a model amplifies past the tolerance is told apart
from a wrong cut by comparing again in float64 (HaloNet at random init: its own float32 and float64
outputs differ by a third of their scale)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.errors import PruningError
from torchslim.graph import compare_outputs


class Chaotic(nn.Module):
    """The sine of a large multiple of a sum: which order the sum is taken in shows in float32."""

    def __init__(self, order: str):
        super().__init__()
        self.order = order
        self.scale = nn.Parameter(torch.tensor(1e6))

    def forward(self, x):
        a, b, c = x[:, 0], x[:, 1], x[:, 2]
        total = {"left": (a + b) + c, "right": a + (b + c), "wrong": a + b}[self.order]
        return torch.sin(self.scale * total)


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 256, generator=torch.Generator().manual_seed(0))


def test_the_same_function_rounded_differently_passes_in_float64():
    x = _input()
    with torch.no_grad():
        float32_gap = float((Chaotic("left")(x) - Chaotic("right")(x)).abs().max())
    assert float32_gap > 1e-2  # float32 alone would call these different
    difference, same = compare_outputs(Chaotic("left"), Chaotic("right"), x)
    assert same and difference < 1e-6


def test_a_different_function_fails_in_both():
    difference, same = compare_outputs(Chaotic("left"), Chaotic("wrong"), _input())
    assert not same and difference > 0.5


def test_the_models_compared_stay_in_float32():
    reference, pruned = Chaotic("left"), Chaotic("right")
    compare_outputs(reference, pruned, _input())  # compared again in float64, on copies
    assert reference.scale.dtype == pruned.scale.dtype == torch.float32


def test_a_pruned_model_that_does_not_run_is_refused_naming_the_layer():
    reference = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    broken = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(6, 3))  # a consumer left unresized
    with pytest.raises(PruningError, match=r"fails on input \(2, 8\) in 2 \(Linear\): RuntimeError"):
        compare_outputs(reference, broken, torch.randn(2, 8))
    assert not broken[2]._forward_hooks and not broken[2]._forward_pre_hooks


def test_a_pruned_model_with_outputs_of_another_shape_is_refused():
    with pytest.raises(PruningError, match=r"outputs of shape \(2, 2\), not \(2, 3\)"):
        compare_outputs(nn.Linear(8, 3), nn.Linear(8, 2), torch.randn(2, 8))
