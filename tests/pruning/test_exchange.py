"""Trading channels between groups: a lower cost at the same MACs."""

from __future__ import annotations

import numpy as np
import torch

from tests.helpers.latency import SyntheticTable, plan_builder
from torchslim.latency.cost import LatencyModel
from torchslim.pruning.cost import CostModel
from torchslim.pruning.exchange import _filled_moves, _Step, minimize_cost
from torchslim.pruning.search import search_uniform


class StemChannels(CostModel):
    """A cost that only the stem's kept channels pay: moving MACs off the stem is always cheaper."""

    def __init__(self, units: np.ndarray) -> None:
        self.units = units

    def estimate(self, mask: np.ndarray) -> float:
        return float((~mask[self.units]).sum())

    def base(self) -> float:
        return float(len(self.units))


def test_minimize_cost_moves_channels_to_where_they_cost_nothing(wide):
    group_set, builder = plan_builder(wide, torch.randn(1, 3, 32, 32), allowed_block=8)
    stem = next(g for g in builder.sizes if group_set.groups[g].sources == ["stem.0"])
    cost = StemChannels(np.asarray(group_set.groups[stem].units))
    start = search_uniform(builder, 0.5, 0.02)
    better = minimize_cost(builder, cost, start, 0.5, 0.02)
    assert start.keep[stem] == 32
    # The stem goes down to its lowest allowed count (a multiple of 8) within the spread of 0.25.
    assert better.keep[stem] == 24 and cost.estimate(better.mask) == 24.0 < cost.estimate(start.mask)
    assert abs(better.reduction - 0.5) <= 0.02 / 2  # on target: within half the tolerance


def test_minimize_latency_lowers_the_estimate_at_the_same_macs(wide, tmp_path):
    example = torch.randn(1, 3, 32, 32)
    group_set, builder = plan_builder(wide, example, allowed_block=8)
    model_latency = LatencyModel(group_set, wide, 32, SyntheticTable(tmp_path))  # pads to blocks of 16
    stem = next(g for g in builder.sizes if group_set.groups[g].sources == ["stem.0"])
    start = search_uniform(builder, 0.45, 0.02)
    assert start.keep[stem] == 24  # not a multiple of the runtime's block: there is time to win
    better = minimize_cost(builder, model_latency, start, 0.45, 0.02)
    assert model_latency.estimate(better.mask) < model_latency.estimate(start.mask)
    assert better.keep[stem] % 16 == 0
    assert abs(better.reduction - 0.45) <= 0.02 / 2


def test_filled_moves_give_back_a_big_step_in_small_ones(tmp_path):
    import torchvision

    model = torchvision.models.mobilenet_v2(
        width_mult=0.5, num_classes=10
    ).eval()  # many groups of many widths
    example = torch.randn(1, 3, 32, 32)
    group_set, builder = plan_builder(model, example, allowed_block=8)
    model_latency = LatencyModel(group_set, model, 32, SyntheticTable(tmp_path))
    start = search_uniform(builder, 0.4, 0.02)
    start_ms = model_latency.estimate(start.mask)
    singles = []
    for group, kept in start.keep.items():
        for direction in (-1, 1):
            count = builder.step(group, kept, direction)
            if count is not None:
                candidate = builder.build({**start.keep, group: count})
                singles.append(_Step(group, count, candidate, model_latency.estimate(candidate.mask)))
    step = lambda s: abs(s.plan.reduction - start.reduction)  # noqa: E731
    biggest = max((s for s in singles if s.count < start.keep[s.group]), key=step)
    tolerance = 0.01  # the latency planner's default
    assert step(biggest) > tolerance / 2  # the removal alone leaves the target
    filled = list(_filled_moves(builder, start, start_ms, singles, [biggest], start.reduction, tolerance / 2))
    assert len(filled) == 1
    for candidate in filled:
        assert abs(candidate.reduction - start.reduction) <= tolerance / 2
        changed = {g for g in start.keep if candidate.keep[g] != start.keep[g]}
        removed = [g for g in changed if candidate.keep[g] < start.keep[g]]
        assert len(removed) == 1 and len(changed) >= 2  # one step off, given back elsewhere
