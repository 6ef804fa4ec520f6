"""The pruning correctness oracle, and real models pruned once per session for the tests that share them.

The oracle: ``torchslim.graph.oracle_reference(original, group_set, mask)`` is the unpruned
model with every consumer's input weights zeroed at the removed channels; the pruned model
must compute the same function. ``assert_oracle`` checks that and returns how much pruning
changed the function, so that a caller can show the check is not vacuous.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers.models import calibrate
from torchslim.graph import oracle_reference
from torchslim.models import build_model
from torchslim.nn import eval_mode
from torchslim.pruning.counting import profile_model
from torchslim.pruning.prune import prune

ROUND_TO = 8


NUM_CLASSES = 10


@torch.no_grad()
def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` in eval mode; the model's modes are left as they were."""
    with eval_mode(model):
        return model(x)


def assert_oracle(original: nn.Module, result, x: torch.Tensor, rtol: float = 1e-4) -> float:
    """Pruned output == oracle output to ``rtol`` of its scale; returns how much pruning changed it."""
    reference = oracle_reference(original, result.group_set, result.plan.mask)
    expected, actual, before = outputs(reference, x), outputs(result.model, x), outputs(original, x)
    assert actual.shape == expected.shape == before.shape
    scale = float(expected.abs().max())
    assert scale > 1e-3, f"output scale {scale} is too small for a meaningful comparison"
    difference = float((expected - actual).abs().max())
    assert difference <= rtol * scale, (
        f"pruned output differs from the oracle by {difference} (scale {scale})"
    )
    return float((before - expected).abs().max()) / scale


def convs(model: nn.Module) -> dict[str, nn.modules.conv._ConvNd]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}


def linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def kept_rows(original: torch.Tensor, pruned: torch.Tensor, columns=None) -> list[int]:
    """Which rows (output channels) of ``original`` survive in ``pruned``, found by value."""
    source = original if columns is None else original[:, columns]
    kept = []
    for row in pruned:
        hits = [i for i in range(len(source)) if torch.equal(source[i], row)]
        assert len(hits) == 1, "pruned row not found exactly once in the original"
        kept.append(hits[0])
    return kept


def group_of(result, layer: str):
    return next(g for g in result.group_set.groups if layer in g.sources)


# name, input size; pruned once per session and shared by the tests below.
MODEL_CASES = [
    ("mobilenet_v1", 64),
    ("mobilenet_v2", 64),
    ("resnet34", 64),
    ("torchvision:resnet18", 64),
    ("torchvision:resnet50", 64),
    ("torchvision:mobilenet_v3_small", 64),
    ("torchvision:efficientnet_b0", 64),
    ("torchvision:densenet121", 32),
    ("torchvision:shufflenet_v2_x0_5", 64),
]


# Every case runs by default; ONNX export of the rest is slow-marked,
# the quick set covers depthwise, residual and channel-shuffle models.
QUICK_ONNX = {"mobilenet_v2", "torchvision:resnet18", "torchvision:shufflenet_v2_x0_5"}


def cases(quick: set[str] | None = None) -> list:
    """MODEL_CASES names; those not in ``quick`` (default: all) are marked slow."""
    return [
        n if quick is None or n in quick else pytest.param(n, marks=pytest.mark.slow) for n, _ in MODEL_CASES
    ]


_PRUNED: dict[str, tuple] = {}


def pruned_case(name: str):
    """(original, result, example input, size) for one model, pruned to 0.5 once per session."""
    if name not in _PRUNED:
        size = dict(MODEL_CASES)[name]
        torch.manual_seed(0)
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        original = calibrate(build_model(name, num_classes=NUM_CLASSES), (4, 3, size, size))
        result = prune(original, x, target_flops=0.5, round_to=ROUND_TO)
        _PRUNED[name] = (original, result, x, size)
    return _PRUNED[name]


def prune_small(model: nn.Module, target: float = 0.4, size: int = 16, **kwargs):
    torch.manual_seed(0)
    calibrate(model, (4, 3, size, size))
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    result = prune(model, x, target_flops=target, round_to=kwargs.pop("round_to", 1), **kwargs)
    assert abs(result.report.flops_reduction - target) <= 0.01
    assert result.report.macs_after == profile_model(result.model, size).macs
    changed = assert_oracle(model, result, x)
    assert changed > 1e-4
    return result, x
