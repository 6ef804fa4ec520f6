"""Why a model has little to prune: the blocked groups aggregated by what blocks them.

Tracing gives every kept group one reason ("fixed slice of channels at node getitem_3"). Here
those reasons lose their node and layer names and gain the class of the module that holds the
op, so that 16 identical blocks read as one line a user can act on: "GhostModule: fixed slice of
channels: 16 groups, 41% of MACs".
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from torchslim.graph import GroupSet, plan_macs
from torchslim.pruning.plan import PlanBuilder

# Reason texts, with the names that differ from block to block taken out (first match wins).
_PLACES = (
    (re.compile(r"^unsupported layer (\S+) \((?P<where>[^)]*)\)$"), r"unsupported layer \1"),
    (re.compile(r"^grouped conv (?P<where>\S+) \(groups=\d+\) is kept whole$"), "grouped conv kept whole"),
    (
        re.compile(r"^tensor (?P<where>\S+) combined with channels at node \S+$"),
        "tensor attribute combined with channels",
    ),
    (re.compile(r"^channels of (?P<where>\S+) vary across other axes$"), "channels vary across other axes"),
    (
        re.compile(r"^weight-standardised conv (?P<where>\S+) \(its input channels are kept\)$"),
        "input channels of a weight-standardised conv",
    ),
    (re.compile(r"^(.*) at (?:node )?(?P<where>\S+)$"), r"\1"),
)
# The tracer's " in <module path> (<module class>)" suffix, where it names the module that ran the op.
_INSIDE = re.compile(r"^(?P<reason>.*) in \S+ \((?P<owner>[^)]*)\)$")
_UNSELECTED = "not selected by pruned_params"
_OUTPUT = "model output"  # the classifier's outputs: always kept, nothing to act on


@dataclass(frozen=True)
class Blocker:
    """One kind of reason that keeps groups whole, where it happens, and what it costs."""

    reason: str  # the reason without node or layer names
    owner: str  # class of the module holding the op ("" at the model's top level)
    groups: int
    channels: int
    macs_share: float  # fraction of the model's MACs that those groups' channels carry

    def describe(self) -> str:
        where = f"{self.owner}: " if self.owner else ""
        return f"{where}{self.reason}: {self.groups} groups, {self.macs_share:.1%} of MACs"


@dataclass(frozen=True)
class Explanation:
    """What tracing allows: prunable groups and the MACs they carry, and the blockers of the rest."""

    groups: int
    prunable: int
    prunable_macs_share: float
    narrow: int  # prunable groups no wider than round_to: they keep every channel
    round_to: int
    most_removable: float  # the MACs fraction that pruning every prunable group to the minimum removes
    blockers: list[Blocker]

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self, top: int = 3) -> str:
        """One line for an error message: the largest blockers, and the narrow groups."""
        actionable = [b for b in self.blockers if not b.reason.startswith(_OUTPUT)]
        parts = [b.describe() for b in actionable[:top]]
        if len(actionable) > top:
            parts.append(f"{len(actionable) - top} more kinds (prune --explain lists them)")
        if self.narrow:
            parts.append(f"{self.narrow} prunable groups are no wider than round_to={self.round_to}")
        return "blocked by " + "; ".join(parts) if parts else "nothing is blocked"


def explain_groups(group_set: GroupSet, round_to: int) -> Explanation:
    """Aggregate the kept groups of ``group_set`` by blocking reason, largest MACs share first."""
    base = max(float(plan_macs(group_set, np.zeros(len(group_set.roots), dtype=bool))), 1.0)
    kinds: dict[tuple[str, str], list] = {}
    for group in group_set.skipped():
        kinds.setdefault(blocking_reason(group.reason, group_set.graph.owners), []).append(group)
    blockers = [
        Blocker(
            reason,
            owner,
            len(groups),
            sum(g.size for g in groups),
            _macs_carried(group_set, np.concatenate([g.units for g in groups]), base),
        )
        for (reason, owner), groups in kinds.items()
    ]
    blockers.sort(key=lambda b: (-b.macs_share, -b.groups, b.reason))
    prunable = group_set.prunable()
    units = np.concatenate([g.units for g in prunable]) if prunable else np.zeros(0, dtype=np.int64)
    return Explanation(
        groups=len(group_set.groups),
        prunable=len(prunable),
        prunable_macs_share=_macs_carried(group_set, units, base),
        narrow=sum(1 for g in prunable if g.size <= round_to),
        round_to=round_to,
        most_removable=_most_removable(group_set, round_to) if prunable else 0.0,
        blockers=blockers,
    )


def blocking_reason(reason: str, owners: dict[str, str]) -> tuple[str, str]:
    """(reason without names, class of the module holding the op) for one kept group's reason."""
    if reason.startswith((_UNSELECTED, _OUTPUT)):
        return reason, ""
    inside = _INSIDE.match(reason)
    if inside:
        reason = inside.group("reason")
    for pattern, replacement in _PLACES:
        match = pattern.match(reason)
        if match:
            owner = inside.group("owner") if inside else owners.get(match.group("where"), "")
            return pattern.sub(replacement, reason), owner
    return reason, inside.group("owner") if inside else ""


def _macs_carried(group_set: GroupSet, units: np.ndarray, base: float) -> float:
    """The fraction of MACs that removing every one of ``units`` would take away."""
    if not len(units):
        return 0.0
    mask = np.zeros(len(group_set.roots), dtype=bool)
    mask[units] = True
    return 1.0 - plan_macs(group_set, mask) / base


def _most_removable(group_set: GroupSet, round_to: int) -> float:
    order = {g.index: np.arange(g.size) for g in group_set.prunable()}
    return PlanBuilder(group_set, order, round_to).smallest().reduction
