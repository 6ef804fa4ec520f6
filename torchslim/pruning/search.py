"""Plan searches: how many channels each group keeps so that a cost drops by a target."""

from __future__ import annotations

import numpy as np

from torchslim.errors import PruningError
from torchslim.pruning.cost import CostModel, MacsCost
from torchslim.pruning.explain import explain_groups
from torchslim.pruning.plan import Plan, PlanBuilder


def search_uniform(
    builder: PlanBuilder, target: float, tolerance: float = 0.01, cost: CostModel | None = None
) -> Plan:
    """One ratio for all groups, bisected, then nudged until ``cost`` (MACs by default) drops by
    ``target`` within ``tolerance``."""

    def plan_for(ratio: float) -> Plan:
        return builder.build({g: builder.aligned(g, n * (1.0 - ratio)) for g, n in builder.sizes.items()})

    return _bisect_then_nudge(builder, plan_for, target, tolerance, cost)


def search_global(
    builder: PlanBuilder,
    scores: dict[int, np.ndarray],
    target: float,
    tolerance: float = 0.01,
    per_mac: bool = False,
) -> Plan:
    """Rank all units of all groups by their normalized score; keep those above one threshold.

    With ``per_mac`` a unit's score is divided by the MACs that removing it saves (relative to the
    mean over groups): a head, an MLP channel and an embedding channel compete on importance per
    MAC, so the cut falls where it costs the least importance for the MACs it removes.
    """
    normalized = {g: s / s.mean() if s.mean() > 0 else s for g, s in scores.items()}
    if per_mac:
        costs = unit_macs(builder)
        mean = float(np.mean(list(costs.values()))) or 1.0
        normalized = {g: s / max(costs[g] / mean, 1e-12) for g, s in normalized.items()}
    values = np.sort(np.concatenate(list(normalized.values()))) if normalized else np.zeros(1)

    def plan_for(fraction: float) -> Plan:
        threshold = values[min(int(fraction * len(values)), len(values) - 1)] if fraction > 0 else -np.inf
        keep = {g: builder.aligned(g, float((s >= threshold).sum())) for g, s in normalized.items()}
        return builder.build(keep)

    return _bisect_then_nudge(builder, plan_for, target, tolerance)


def unit_macs(builder: PlanBuilder) -> dict[int, float]:
    """MACs that removing one unit (the least important) of each group saves, on its own."""
    costs = {}
    for group, size in builder.sizes.items():
        plan = builder.build({group: size - 1})
        costs[group] = float(max(builder.macs_before - plan.macs_after, 1))
    return costs


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


def _bisect_then_nudge(
    builder: PlanBuilder, plan_for, target: float, tolerance: float, cost: CostModel | None = None
) -> Plan:
    """Bisect ``plan_for``'s parameter until ``cost`` (MACs by default) drops by ``target``, then nudge."""
    if not builder.sizes:
        raise PruningError(f"no prunable group: every group is kept whole; {_blockers(builder)}")
    cost = cost or MacsCost(builder.group_set)
    most = cost.reduction(builder.smallest())
    if most < target - tolerance:
        raise PruningError(
            f"{cost.target_name} {target:.2%} is unreachable: removing everything allowed "
            f"(round_to={builder.round_to}) removes only {most:.2%} of {cost.what}; at their smallest: "
            f"{_smallest_groups(builder)}; {_blockers(builder)}"
        )
    low, high = 0.0, 1.0
    best = plan_for(0.0)
    best_error = abs(cost.reduction(best) - target)
    for _ in range(40):
        middle = (low + high) / 2
        plan = plan_for(middle)
        value = cost.reduction(plan)
        if abs(value - target) < best_error:
            best, best_error = plan, abs(value - target)
        if value < target:
            low = middle
        else:
            high = middle
        if best_error <= tolerance / 4:
            break
    return _nudge(builder, best, target, tolerance, cost)


def _smallest_groups(builder: PlanBuilder, count: int = 4) -> str:
    """The first groups and the counts they keep at least, e.g. "blocks.0.attn.qkv (heads) keeps 1 of 6"."""
    named = []
    for group in list(builder.sizes)[:count]:
        info = builder.group_set.groups[group]
        named.append(f"{info.name} ({info.kind}) keeps {builder.aligned(group, 0)} of {builder.sizes[group]}")
    more = len(builder.sizes) - count
    return ", ".join(named) + (f", ... ({more} more)" if more > 0 else "")


def _nudge(builder: PlanBuilder, plan: Plan, target: float, tolerance: float, cost: CostModel) -> Plan:
    """Move single groups by one alignment step while that brings the reduction closer to target."""
    reduction = cost.reduction(plan)
    for _ in range(200):
        if abs(reduction - target) <= tolerance / 4:
            break
        direction = -1 if reduction < target else 1  # fewer kept units remove more
        best, best_reduction = plan, reduction
        for group, kept in plan.keep.items():
            count = builder.step(group, kept, direction)
            if count is None:
                continue
            candidate = builder.build({**plan.keep, group: count})
            value = cost.reduction(candidate)
            if abs(value - target) < abs(best_reduction - target):
                best, best_reduction = candidate, value
        if best is plan:
            break
        plan, reduction = best, best_reduction
    if abs(reduction - target) > tolerance:
        raise PruningError(
            f"could not land within {tolerance:.1%} of the {cost.target_name} {target:.2%} "
            f"(closest: {reduction:.2%}); try a smaller round_to"
        )
    return plan


def _blockers(builder: PlanBuilder) -> str:
    """What keeps the rest of the model whole, for a refusal (``prune --explain`` has the full list)."""
    return explain_groups(builder.group_set, builder.round_to).summary()
