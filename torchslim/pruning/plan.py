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
        # A head is head_dim channels wide (a multiple of 8 in every model we know): heads go one by one.
        self.steps = {g: 1 if group_set.groups[g].kind == "heads" else self.round_to for g in order}
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
        """The allowed count nearest ``wanted``: a multiple of round_to (of one, for heads), from one step
        up to the size."""
        if group in self.allowed:
            values = self.allowed[group]
            return int(values[int(np.argmin(np.abs(values - wanted)))])
        size, step = self.sizes[group], self.steps[group]
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
        candidate = count + (self.steps[group] if direction > 0 else -self.steps[group])
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
