"""PlanBuilder: channel counts aligned to round_to, or to a latency table's allowed counts."""

from __future__ import annotations

import torch

from tests.helpers.latency import plan_builder
from torchslim.pruning.search import search_uniform


def test_plan_builder_with_allowed_counts(wide):
    group_set, builder = plan_builder(wide, torch.randn(1, 3, 32, 32), allowed_block=16)
    group = next(iter(builder.sizes))
    values = builder.allowed[group]
    assert all(v % 16 == 0 or v == builder.sizes[group] for v in values)
    assert builder.aligned(group, 21) == 16 and builder.aligned(group, 0) == 16
    assert builder.step(group, 16, +1) == 32 and builder.step(group, 16, -1) is None
    plan = search_uniform(builder, 0.5, 0.03)
    assert abs(plan.reduction - 0.5) <= 0.03
    assert all(k in builder.allowed[g] for g, k in plan.keep.items())


def test_plan_builder_without_allowed_is_round_to(wide):
    _, builder = plan_builder(wide, torch.randn(1, 3, 32, 32))
    group = next(iter(builder.sizes))
    assert builder.allowed == {}
    assert builder.step(group, 16, +1) == 24 and builder.step(group, 8, -1) is None
    assert builder.aligned(group, 21) == 24
