"""From a sensitivity table to per-group keep counts for a MACs target."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from torchslim.errors import PruningError
from torchslim.graph import GroupSet
from torchslim.pruning.plan import Plan, PlanBuilder
from torchslim.sensitivity.table import SensitivityTable

FLAT_SLOPE = 1e-6


# ----------------------------------------------------------------------------- from a table to a plan


class LossCurves:
    """Interpolated loss curves of the groups in a table, by group index."""

    def __init__(self, table: SensitivityTable, group_set: GroupSet, sizes: dict[int, int]) -> None:
        self.curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for index in sizes:
            name = group_set.groups[index].name
            if table.groups.get(name):
                self.curves[index] = table.curve(name)

    def loss(self, group: int, ratio: float) -> float:
        """Predicted loss at ``ratio`` (linear between scanned points, steeper-than-last beyond them)."""
        if group not in self.curves:
            return 0.0 if ratio <= 0 else math.inf
        ratios, losses = self.curves[group]
        if ratio <= ratios[-1]:
            return float(np.interp(ratio, ratios, losses))
        return math.inf  # never scanned: never chosen

    def max_ratio(self, group: int) -> float:
        return float(self.curves[group][0][-1]) if group in self.curves else 0.0

    def ratio_at(self, group: int, level: float) -> float:
        """The largest ratio whose predicted loss is at most ``level``.

        A tiny slope (``FLAT_SLOPE`` per unit ratio) makes flat stretches strictly
        increasing, so that groups whose losses are all zero share a level evenly
        instead of all jumping to their largest ratio at once.
        """
        if group not in self.curves:
            return 0.0
        ratios, losses = self.curves[group]
        losses = losses + FLAT_SLOPE * ratios
        above = np.nonzero(losses > level)[0]
        if not len(above):
            return float(ratios[-1])
        j = int(above[0])  # losses[j-1] <= level < losses[j]; j >= 1 since losses[0] = 0 <= level
        share = (level - losses[j - 1]) / (losses[j] - losses[j - 1])
        return float(ratios[j - 1] + share * (ratios[j] - ratios[j - 1]))

    def levels(self) -> np.ndarray:
        values = [losses + FLAT_SLOPE * ratios for ratios, losses in self.curves.values()]
        return np.unique(np.concatenate(values)) if values else np.zeros(1)


@dataclass
class SensitivePlan:
    plan: Plan
    ratios: dict[str, float]  # group name -> fraction of its units removed
    predicted_loss: dict[str, float]  # group name -> predicted relative loss
    level: float  # allowed loss ("level") or the last marginal loss per removed MAC ("marginal")


ALLOCATIONS = ("marginal", "level")


def plan_from_sensitivities(
    table: SensitivityTable,
    group_set: GroupSet,
    scores: dict[int, np.ndarray],
    target: float,
    *,
    round_to: int = 8,
    tolerance: float = 0.015,
    allocation: str = "marginal",
) -> SensitivePlan:
    """Per-group keep counts removing ``target`` of the MACs (within ``tolerance``) at least predicted loss.

    ``allocation``:

    - ``"marginal"`` (default): starting from the whole model, repeatedly remove one
      ``round_to`` step (one head from a heads group) from the group whose predicted loss grows least per MAC
      removed, until the target is reached: the least *total* predicted loss for
      the MACs (a layer whose channels are cheap in MACs must be much less
      sensitive to be worth pruning).
    - ``"level"``: the seed's rule: bisect one allowed-loss level; every group
      loses the largest ratio whose predicted loss stays under it (equal loss
      per group, whatever each group's MACs).

    ``benchmarks/smart_pruning.py`` compares the two. Either way single groups are then
    nudged by one step (least predicted loss per MAC first) to land within ``tolerance``.
    Groups absent from the table keep every channel; no group is pruned beyond the
    largest ratio scanned.
    """
    if not 0.0 < target < 1.0:
        raise PruningError(f"FLOPs target must be in (0, 1), got {target}")
    if allocation not in ALLOCATIONS:
        raise PruningError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    builder = PlanBuilder(group_set, {g: np.argsort(s, kind="stable") for g, s in scores.items()}, round_to)
    curves = LossCurves(table, group_set, builder.sizes)
    if not curves.curves:
        raise PruningError(
            "the sensitivity table holds no group of this model: nothing to choose ratios from"
        )
    levels = _LevelPlans(builder, curves)
    highest = levels.plan_at(levels.top)
    if highest.reduction < target - tolerance:
        raise PruningError(
            f"FLOPs target {target:.2%} is unreachable from the sensitivity table: pruning every scanned "
            f"group to its largest scanned ratio removes only {highest.reduction:.2%} of MACs"
        )
    if allocation == "marginal":
        best, best_level = _greedy_by_marginal_loss(builder, curves, target)
    else:
        best, best_level = levels.bisect(target)
    plan = _nudge_by_loss(builder, curves, best, target, tolerance)
    if abs(plan.reduction - target) > tolerance:
        raise PruningError(
            f"could not land within {tolerance:.1%} of the FLOPs target {target:.2%} "
            f"(closest: {plan.reduction:.2%}); try a smaller round_to or more scanned ratios"
        )
    return _sensitive_plan(plan, builder, curves, best_level)


def _sensitive_plan(plan: Plan, builder: PlanBuilder, curves: LossCurves, level: float) -> SensitivePlan:
    """``plan`` with every group's removed ratio and predicted loss, by group name."""
    ratios = {g: 1.0 - k / builder.sizes[g] for g, k in plan.keep.items()}
    names = {g: builder.group_set.groups[g].name for g in ratios}
    predicted = {names[g]: curves.loss(g, ratio) for g, ratio in ratios.items()}
    return SensitivePlan(plan, {names[g]: ratio for g, ratio in ratios.items()}, predicted, level)


class _LevelPlans:
    """Plans of the "level" rule: each group loses the largest ratio predicted to cost at most a level."""

    def __init__(self, builder: PlanBuilder, curves: LossCurves) -> None:
        self.builder, self.curves = builder, curves
        self.top = float(curves.levels()[-1]) + 1.0  # a level above every scanned loss

    def keep_for(self, group: int, ratio: float) -> int:
        size = self.builder.sizes[group]
        keep = self.builder.aligned(group, size * (1.0 - ratio))
        while keep < size and 1.0 - keep / size > self.curves.max_ratio(group) + 1e-9:
            keep = min(size, keep + self.builder.steps[group])  # rounding went past the scanned range
        return keep

    def plan_at(self, level: float) -> Plan:
        return self.builder.build(
            {g: self.keep_for(g, self.curves.ratio_at(g, level)) for g in self.builder.sizes}
        )

    def bisect(self, target: float) -> tuple[Plan, float]:
        """The plan of the level whose MACs reduction comes closest to ``target``, and that level."""
        low, high = 0.0, self.top
        best, best_level = self.plan_at(0.0), 0.0
        for _ in range(60):
            middle = (low + high) / 2
            plan = self.plan_at(middle)
            if abs(plan.reduction - target) < abs(best.reduction - target):
                best, best_level = plan, middle
            if plan.reduction < target:
                low = middle
            else:
                high = middle
        return best, best_level


def _step_down(builder: PlanBuilder, group: int, kept: int) -> int | None:
    """The next smaller allowed keep count of ``group`` (multiples of its step: round_to, or one for a
    heads group), or None at the minimum."""
    step = builder.steps[group]
    count = (kept - 1) // step * step
    return count if count >= step else None


def _greedy_by_marginal_loss(builder: PlanBuilder, curves: LossCurves, target: float) -> tuple[Plan, float]:
    """Remove one step at a time from the group with the least predicted loss per removed MAC.

    Ties (flat stretches cost nothing) go to the group that keeps the smaller ratio after the step, so free
    pruning is spread evenly rather than emptying one group first.
    """
    keep = dict(builder.sizes)
    plan = builder.build(keep)
    cost = 0.0
    while plan.reduction < target:
        best: tuple[float, float, int, int, Plan] | None = None
        for group, kept in keep.items():
            count = _step_down(builder, group, kept)
            size = builder.sizes[group]
            if count is None or 1.0 - count / size > curves.max_ratio(group) + 1e-9:
                continue
            candidate = builder.build({**keep, group: count})
            removed = plan.macs_after - candidate.macs_after
            if removed <= 0:
                continue
            added = curves.loss(group, 1.0 - count / size) - curves.loss(group, 1.0 - kept / size)
            key = (added / removed, 1.0 - count / size)
            if best is None or key < best[:2]:
                best = (*key, group, count, candidate)
        if best is None:
            break
        cost, _, group, count, plan = best
        keep[group] = count
    return plan, cost


def _nudge_by_loss(
    builder: PlanBuilder, curves: LossCurves, plan: Plan, target: float, tolerance: float
) -> Plan:
    """Move one group one step (``round_to``; one head for a heads group) at a time towards the target,
    least predicted loss per MAC first.

    Ties go to the move that leaves the ratios most even (the smaller ratio after a removal, the larger
    ratio before a give-back).
    """
    for _ in range(500):
        error = plan.reduction - target
        if abs(error) <= tolerance / 4:
            break
        remove = error < 0
        best: tuple[float, float, Plan] | None = None
        for group, kept in plan.keep.items():
            size = builder.sizes[group]
            count = _step_down(builder, group, kept) if remove else _step_up(builder, group, kept)
            if count is None:
                continue
            new_ratio = 1.0 - count / size
            if remove and new_ratio > curves.max_ratio(group) + 1e-9:
                continue
            candidate = builder.build({**plan.keep, group: count})
            if abs(candidate.reduction - target) >= abs(error):
                continue
            moved = abs(candidate.macs_after - plan.macs_after) or 1
            # predicted loss added per MAC removed, or (negative) loss saved per MAC given back
            cost = (curves.loss(group, new_ratio) - curves.loss(group, 1.0 - kept / size)) / moved
            key = (cost, new_ratio if remove else -(1.0 - kept / size))
            if best is None or key < best[:2]:
                best = (*key, candidate)
        if best is None:
            break
        plan = best[2]
    return plan


def _step_up(builder: PlanBuilder, group: int, kept: int) -> int | None:
    """The next larger allowed keep count of ``group``, or None when it keeps everything."""
    size, step = builder.sizes[group], builder.steps[group]
    if kept >= size:
        return None
    return min(size, (kept // step + 1) * step)


def predicted_total_loss(plan: SensitivePlan) -> float:
    return float(sum(v for v in plan.predicted_loss.values() if math.isfinite(v)))
