"""Trading channels between groups to lower a cost (e.g. latency) at (nearly) the same MACs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torchslim.pruning.cost import CostModel
from torchslim.pruning.plan import Plan, PlanBuilder


@dataclass
class _Step:
    """One group moved by one allowed step from the current plan, and what that plan costs."""

    group: int
    count: int
    plan: Plan
    cost: float


def minimize_cost(
    builder: PlanBuilder,
    cost: CostModel,
    plan: Plan,
    target: float,
    tolerance: float = 0.01,
    *,
    spread: float = 0.25,
    max_moves: int = 200,
) -> Plan:
    """Greedy exchange that lowers ``cost.estimate`` while the MACs reduction stays within
    ``tolerance / 2`` of ``target``.

    A move is one single step that stays on target, or one step off a group paired with one
    step onto another, or one step off a group whose MACs are given back in single steps to
    the groups that add the least cost per MAC (a wide group's step can hold more MACs than
    any one step elsewhere). The move saving most is kept. Every group stays within ``spread``
    of the kept fraction ``plan`` gave it, so accuracy is not traded away for speed.
    """
    bounds = {group: _bounds(builder.sizes[group], kept, spread) for group, kept in plan.keep.items()}
    current, current_cost = plan, cost.estimate(plan.mask)
    for _ in range(max_moves):
        steps = _single_steps(builder, cost, current, bounds)
        best, best_cost = _best_move(builder, cost, current, current_cost, steps, target, tolerance)
        if best is None or best_cost >= current_cost * (1.0 - 1e-4):
            break
        current, current_cost = best, best_cost
    return current


def _bounds(size: int, kept: int, spread: float) -> tuple[int, int]:
    fraction = kept / size
    return max(1, int((fraction - spread) * size)), int((fraction + spread) * size)


def _single_steps(builder: PlanBuilder, cost: CostModel, current: Plan, bounds) -> list[_Step]:
    steps = []
    for group, kept in current.keep.items():
        for direction in (-1, 1):
            count = builder.step(group, kept, direction)
            if count is None or not bounds[group][0] <= count <= bounds[group][1]:
                continue
            candidate = builder.build({**current.keep, group: count})
            steps.append(_Step(group, count, candidate, cost.estimate(candidate.mask)))
    return steps


def _best_move(builder, cost, current: Plan, current_cost: float, steps, target, tolerance):
    """The cheapest plan among the single, paired and filled moves from ``current`` that stay on target."""
    best, best_cost = None, current_cost
    on_target = tolerance / 2
    for step in steps:
        if abs(step.plan.reduction - target) <= on_target and step.cost < best_cost:
            best, best_cost = step.plan, step.cost
    downs = sorted((s for s in steps if s.count < current.keep[s.group]), key=lambda s: s.cost)[:8]
    ups = sorted((s for s in steps if s.count > current.keep[s.group]), key=lambda s: s.cost)[:8]
    for candidate in _paired_moves(builder, current, downs, ups, target, on_target):
        value = cost.estimate(candidate.mask)
        if value < best_cost:
            best, best_cost = candidate, value
    for candidate in _filled_moves(builder, current, current_cost, steps, downs, target, on_target):
        value = cost.estimate(candidate.mask)
        if value < best_cost:
            best, best_cost = candidate, value
    return best, best_cost


def _paired_moves(builder, current: Plan, downs, ups, target: float, on_target: float) -> Iterator[Plan]:
    """The most cost-saving removals each paired with one of the cheapest additions."""
    for down in downs:
        for up in ups:
            if down.group == up.group:
                continue
            candidate = builder.build({**current.keep, down.group: down.count, up.group: up.count})
            if abs(candidate.reduction - target) <= on_target:
                yield candidate


def _filled_moves(builder, current: Plan, current_cost: float, steps, downs, target: float, on_target: float):
    """For each removal in ``downs``: the plan that then adds single up-steps, cheapest cost per MAC
    first, until the MACs reduction is back within ``on_target`` of ``target``."""
    ups = []
    for step in steps:
        added = current.reduction - step.plan.reduction  # fraction of MACs the step gives back
        if step.count > current.keep[step.group] and added > 0:
            ups.append(((step.cost - current_cost) / added, step.group, step.count, added))
    ups.sort()
    for down in downs:
        keep, candidate = {**current.keep, down.group: down.count}, down.plan
        for _, up_group, up_count, added in ups:
            if candidate.reduction <= target + on_target:
                break
            if up_group == down.group or candidate.reduction - added < target - on_target - added / 4:
                continue  # would overshoot (steps interact, so a quarter step of slack before building)
            trial = builder.build({**keep, up_group: up_count})
            if trial.reduction >= target - on_target:
                keep, candidate = {**keep, up_group: up_count}, trial
        if abs(candidate.reduction - target) <= on_target:
            yield candidate
