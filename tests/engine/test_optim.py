"""Learning-rate schedules and optimizer parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.helpers.models import two_class_net
from torchslim.engine import (
    LR_STRATEGIES,
    build_lr_scheduler,
    build_optimizer,
)


def lr_trace(strategy: str, steps: int, **kwargs) -> list[float]:
    """The LR used by each of the first ``steps`` batches (base LR 1.0)."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = build_lr_scheduler(optimizer, strategy=strategy, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_piecewise_decay_values_at_boundaries():
    lrs = lr_trace("piecewise_decay", 60, epochs=6, steps_per_epoch=10, step_epochs=(4, 2), gamma=0.1)
    assert lrs[0] == 1.0 and lrs[19] == 1.0
    assert lrs[20] == pytest.approx(0.1) and lrs[39] == pytest.approx(0.1)
    assert lrs[40] == pytest.approx(0.01) and lrs[59] == pytest.approx(0.01)


def test_cosine_decay_endpoints_and_midpoint():
    lrs = lr_trace("cosine_decay", 41, epochs=4, steps_per_epoch=10)
    assert lrs[0] == 1.0
    assert lrs[20] == pytest.approx(0.5)
    assert lrs[10] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[40] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_warmup_ramps_linearly_then_follows_schedule():
    lrs = lr_trace("constant", 15, epochs=3, steps_per_epoch=10, warmup_epochs=1.0)
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10:] == [1.0] * 5
    cosine = lr_trace("cosine_decay", 5, epochs=2, steps_per_epoch=10, warmup_epochs=0.5)
    assert cosine[0] == pytest.approx(0.2 * 0.5 * (1 + math.cos(0.0)))
    assert cosine[4] == pytest.approx(1.0 * 0.5 * (1 + math.cos(math.pi * 0.4 / 2)))


def test_unknown_strategy_lists_known_ones():
    with pytest.raises(ValueError, match="exponential") as info:
        lr_trace("exponential", 1, epochs=1, steps_per_epoch=1)
    for name in LR_STRATEGIES:
        assert name in str(info.value)


def test_optimizer_decays_conv_and_linear_weights_only():
    model = two_class_net()
    model[0].weight.requires_grad_(False)  # frozen params are left out
    optimizer = build_optimizer(model, lr=0.1, momentum=0.8, l2_decay=1e-4)
    decay, no_decay = optimizer.param_groups
    assert {id(p) for p in decay["params"]} == {id(model[6].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[1].weight), id(model[1].bias), id(model[6].bias)}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert decay["momentum"] == 0.8 and decay["lr"] == 0.1
    (single,) = build_optimizer(two_class_net(), lr=0.1, l2_decay=1e-4, decay_bn_and_bias=True).param_groups
    assert len(single["params"]) == 5 and single["weight_decay"] == 1e-4
