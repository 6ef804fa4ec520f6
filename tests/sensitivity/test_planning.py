"""From a sensitivity table to per-group ratios: the target is met and sensitive groups are spared."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import conv_chain
from tests.helpers.tiny_models import tiny_vit
from torchslim.errors import PruningError
from torchslim.pruning.prune import analyze
from torchslim.sensitivity.planning import LossCurves as Curves
from torchslim.sensitivity.planning import plan_from_sensitivities
from torchslim.sensitivity.scan import group_scores
from torchslim.sensitivity.table import (
    SensitivityTable,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_table(group_set, slopes: dict[str, float]) -> SensitivityTable:
    table = SensitivityTable("chain", "f", "l1_norm", "top1_acc", "d", 1, base_metric=100.0)
    for group in group_set.prunable():
        for ratio in (0.1, 0.3, 0.5, 0.7, 0.9):
            table.record(group.name, ratio, 100.0 - 100.0 * slopes[group.name] * ratio**2)
        table.sizes[group.name] = group.size
    return table


@pytest.mark.parametrize("allocation", ["marginal", "level"])
@pytest.mark.parametrize("target", [0.3, 0.5])
def test_sensitive_plan_reaches_the_target_and_spares_sensitive_groups(target, allocation):
    model = conv_chain(widths=(32, 64, 64, 64))
    group_set = analyze(model, torch.zeros(1, 3, 8, 8))
    names = [g.name for g in group_set.prunable()]
    slopes = dict(zip(names, (0.05, 2.0, 0.05, 0.05), strict=True))  # the second conv is very sensitive
    table = synthetic_table(group_set, slopes)
    scores = group_scores(group_set, model, "l1_norm")
    chosen = plan_from_sensitivities(table, group_set, scores, target, round_to=8, allocation=allocation)
    assert abs(chosen.plan.reduction - target) <= 0.015
    others = [chosen.ratios[n] for n in names if n != names[1]]
    assert chosen.ratios[names[1]] <= min(others) and chosen.ratios[names[1]] < max(others)
    if allocation == "level":  # equal loss: equally insensitive groups lose about the same share
        assert chosen.ratios[names[1]] < chosen.ratios[names[0]]
    assert all(chosen.plan.keep[g] % 8 == 0 for g in chosen.plan.keep)
    assert all(r <= 0.9 + 1e-9 for r in chosen.ratios.values())
    curves = Curves(table, group_set, {g.index: g.size for g in group_set.prunable()})
    assert curves.ratio_at(group_set.prunable()[0].index, 0.0) == 0.0
    with pytest.raises(PruningError, match="unreachable"):
        plan_from_sensitivities(synthetic_table_subset(table, names[:1]), group_set, scores, 0.9, round_to=8)


@pytest.mark.parametrize("allocation", ["marginal", "level"])
def test_groups_with_flat_curves_are_pruned_evenly(allocation):
    """All losses zero (an easy task): no group is emptied first; the ratios come out like uniform pruning."""
    model = conv_chain(widths=(32, 64, 64, 64))
    group_set = analyze(model, torch.zeros(1, 3, 8, 8))
    table = synthetic_table(group_set, {g.name: 0.0 for g in group_set.prunable()})
    scores = group_scores(group_set, model, "l1_norm")
    chosen = plan_from_sensitivities(table, group_set, scores, 0.5, round_to=8, allocation=allocation)
    assert abs(chosen.plan.reduction - 0.5) <= 0.015
    assert max(chosen.ratios.values()) - min(chosen.ratios.values()) <= 0.25


def synthetic_table_subset(table: SensitivityTable, keep: list[str]) -> SensitivityTable:
    subset = SensitivityTable(**{**table.__dict__, "groups": {n: table.groups[n] for n in keep}})
    return subset


@pytest.mark.parametrize("allocation", ["marginal", "level"])
def test_heads_go_one_by_one_whatever_round_to(allocation):
    """A heads group (4 heads here) steps by one head, as the MACs planner does; with round_to 8 steps
    it could never lose a head."""
    model = tiny_vit().eval()
    group_set = analyze(model, torch.zeros(1, 3, 32, 32))
    heads = [g for g in group_set.prunable() if g.kind == "heads"]
    assert heads and all(g.size == 4 for g in heads)
    table = synthetic_table(
        group_set, {g.name: 0.0 if g.kind == "heads" else 1.0 for g in group_set.prunable()}
    )
    scores = group_scores(group_set, model, "l1_norm")
    chosen = plan_from_sensitivities(table, group_set, scores, 0.2, round_to=8, allocation=allocation)
    assert abs(chosen.plan.reduction - 0.2) <= 0.015
    kept_heads = [chosen.plan.keep[g.index] for g in heads]
    assert min(kept_heads) < 4 and all(1 <= k <= 4 for k in kept_heads)  # free heads went first, not all
