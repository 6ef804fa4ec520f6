"""Finding how many channels each group keeps so that the removed MACs hit a target.

Everything here works on shapes (the channel graph and a removal mask), never
rebuilding the graph or touching weights, so one try costs microseconds.
Channel counts stay multiples of ``round_to`` (or the group's full size), and
after the search lands near the target, single groups are nudged by one
``round_to`` step until the removed fraction is within ``tolerance``.

A builder may instead be given ``allowed`` channel counts per group (e.g. the
counts a runtime runs fast, read off a latency table by
:mod:`torchslim.latency`): then every count is one of those, and a nudge moves a
group to its next allowed count. Without ``allowed`` nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchslim.errors import PruningError
from torchslim.graph import GroupSet, plan_macs


@dataclass
class Plan:
    """How many units each prunable group keeps, and what that costs."""

    keep: dict[int, int]  # group index -> units kept
    mask: np.ndarray  # removed roots
    macs_before: int
    macs_after: int

    @property
    def reduction(self) -> float:
        return 1.0 - self.macs_after / self.macs_before


class PlanBuilder:
    """Turns keep-counts into masks and MACs for one group set and one ranking."""

    def __init__(
        self,
        group_set: GroupSet,
        order: dict[int, np.ndarray],
        round_to: int,
        allowed: dict[int, np.ndarray] | None = None,
    ) -> None:
        self.group_set = group_set
        self.order = order  # group index -> unit indices, least important first
        self.round_to = max(1, int(round_to))
        self.sizes = {g: len(units) for g, units in order.items()}
        self.macs_before = plan_macs(group_set, np.zeros(len(group_set.roots), dtype=bool))
        self.allowed: dict[
            int, np.ndarray
        ] = {}  # group -> sorted allowed counts (groups not here use round_to)
        for group, counts in (allowed or {}).items():
            if group not in self.sizes:
                continue
            size = self.sizes[group]
            values = np.unique(
                np.asarray([c for c in counts if 1 <= int(c) <= size] + [size], dtype=np.int64)
            )
            self.allowed[group] = values

    def aligned(self, group: int, wanted: float) -> int:
        """Nearest allowed count to ``wanted``: a multiple of round_to, at least one step, at most the group size."""
        if group in self.allowed:
            values = self.allowed[group]
            return int(values[int(np.argmin(np.abs(values - wanted)))])
        size, step = self.sizes[group], self.round_to
        if size <= step:
            return size
        count = int(round(wanted / step)) * step
        return int(min(size, max(step, count)))

    def step(self, group: int, count: int, direction: int) -> int | None:
        """The next allowed count above (``direction`` > 0) or below ``count``; None at either end."""
        if group in self.allowed:
            values = self.allowed[group]
            index = int(np.searchsorted(values, count, side="right" if direction > 0 else "left"))
            index = index if direction > 0 else index - 1
            return int(values[index]) if 0 <= index < len(values) else None
        candidate = count + (self.round_to if direction > 0 else -self.round_to)
        if candidate < self.aligned(group, 0) or candidate > self.sizes[group]:
            return None
        return candidate

    def build(self, keep: dict[int, int]) -> Plan:
        mask = np.zeros(len(self.group_set.roots), dtype=bool)
        for group_index, count in keep.items():
            removed = self.order[group_index][: self.sizes[group_index] - count]
            mask[self.group_set.groups[group_index].units[removed]] = True
        return Plan(dict(keep), mask, self.macs_before, plan_macs(self.group_set, mask))

    def smallest(self) -> Plan:
        return self.build({g: self.aligned(g, 0) for g in self.sizes})


def search_uniform(builder: PlanBuilder, target: float, tolerance: float = 0.01) -> Plan:
    """One ratio for all groups, bisected, then nudged to land within ``tolerance`` of ``target``."""

    def plan_for(ratio: float) -> Plan:
        return builder.build({g: builder.aligned(g, n * (1.0 - ratio)) for g, n in builder.sizes.items()})

    return _bisect_then_nudge(builder, plan_for, target, tolerance)


def search_global(
    builder: PlanBuilder, scores: dict[int, np.ndarray], target: float, tolerance: float = 0.01
) -> Plan:
    """Rank all units of all groups by their normalized score; keep those above one threshold."""
    normalized = {g: s / s.mean() if s.mean() > 0 else s for g, s in scores.items()}
    values = np.sort(np.concatenate(list(normalized.values()))) if normalized else np.zeros(1)

    def plan_for(fraction: float) -> Plan:
        threshold = values[min(int(fraction * len(values)), len(values) - 1)] if fraction > 0 else -np.inf
        keep = {g: builder.aligned(g, float((s >= threshold).sum())) for g, s in normalized.items()}
        return builder.build(keep)

    return _bisect_then_nudge(builder, plan_for, target, tolerance)


def search_scaled(
    builder: PlanBuilder,
    target: float,
    tolerance: float,
    scale: dict[int, float],
    bounds: dict[int, tuple[float, float]] | None = None,
) -> Plan:
    """Like :func:`search_uniform`, but group ``g`` keeps ``scale[g]`` times the common fraction, clipped to
    ``bounds[g]`` (kept fractions): one bisected ratio for a fixed *shape* of allocation."""
    bounds = bounds or {}

    def plan_for(ratio: float) -> Plan:
        keep = {}
        for group, size in builder.sizes.items():
            low, high = bounds.get(group, (0.0, 1.0))
            fraction = min(high, max(low, (1.0 - ratio) * scale.get(group, 1.0)))
            keep[group] = builder.aligned(group, size * min(1.0, fraction))
        return builder.build(keep)

    return _bisect_then_nudge(builder, plan_for, target, tolerance)


def _bisect_then_nudge(builder: PlanBuilder, plan_for, target: float, tolerance: float) -> Plan:
    if not builder.sizes:
        raise PruningError("no prunable group: nothing selected by pruned_params can lose channels")
    most = builder.smallest()
    if most.reduction < target - tolerance:
        raise PruningError(
            f"FLOPs target {target:.2%} is unreachable: removing everything allowed "
            f"(round_to={builder.round_to}) removes only {most.reduction:.2%} of MACs"
        )
    low, high = 0.0, 1.0
    best = plan_for(0.0)
    for _ in range(40):
        middle = (low + high) / 2
        plan = plan_for(middle)
        if abs(plan.reduction - target) < abs(best.reduction - target):
            best = plan
        if plan.reduction < target:
            low = middle
        else:
            high = middle
        if abs(best.reduction - target) <= tolerance / 4:
            break
    return _nudge(builder, best, target, tolerance)


def _nudge(builder: PlanBuilder, plan: Plan, target: float, tolerance: float, max_steps: int = 200) -> Plan:
    """Move single groups by one alignment step while that brings the reduction closer to target."""
    for _ in range(max_steps):
        error = abs(plan.reduction - target)
        if error <= tolerance / 4:
            break
        direction = -1 if plan.reduction < target else 1  # fewer kept units remove more MACs
        best = plan
        for group, kept in plan.keep.items():
            count = builder.step(group, kept, direction)
            if count is None:
                continue
            candidate = builder.build({**plan.keep, group: count})
            if abs(candidate.reduction - target) < abs(best.reduction - target):
                best = candidate
        if best is plan:
            break
        plan = best
    if abs(plan.reduction - target) > tolerance:
        raise PruningError(
            f"could not land within {tolerance:.1%} of the FLOPs target {target:.2%} "
            f"(closest: {plan.reduction:.2%}); try a smaller round_to"
        )
    return plan
