"""Planners: how :func:`torchslim.prune` turns channel scores into a plan for its targets.

The default planner searches keep-counts in ``round_to`` steps for a MACs target. Other
planners (latency-aware planning in :mod:`torchslim.latency.planner`) plug in here with
their own cost model; ``prune()`` itself never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from torchslim.errors import PruningError
from torchslim.graph import GroupSet
from torchslim.pruning.plan import Plan, PlanBuilder
from torchslim.pruning.search import search_global, search_uniform

# Kept channel counts are multiples of this: ONNX Runtime's CPU kernels work on blocks of 16 channels
# (benchmarks/RESULTS.md has the round_to sweep behind the choice).
DEFAULT_ROUND_TO = 16


@dataclass
class PlanRequest:
    """What a planner is asked: the traced groups, their unit scores, and the targets."""

    model: nn.Module
    group_set: GroupSet
    scores: dict[int, np.ndarray]  # group index -> one score per unit, higher is more important
    example_input: torch.Tensor
    target_flops: float | None  # fraction of MACs to remove; None when the planner has its own target
    tolerance: float = 0.01


class Planner(Protocol):
    def plan(self, request: PlanRequest) -> tuple[Plan, Any]:
        """The plan, and what the planner wants reported beside it (or None)."""


@dataclass
class MacsPlanner:
    """Keep-counts in ``round_to`` steps that remove ``target_flops`` of the MACs: one ratio for all
    groups, or with ``global_ranking`` one score threshold over all groups' normalized scores."""

    round_to: int = DEFAULT_ROUND_TO
    global_ranking: bool = False
    per_mac: bool = False  # global ranking by importance per MAC (heads, MLP and embedding in balance)

    def plan(self, request: PlanRequest) -> tuple[Plan, None]:
        if request.target_flops is None:
            raise PruningError("a FLOPs target is needed: give target_flops")
        plan = plan_for_target(
            request.group_set,
            request.scores,
            request.target_flops,
            self.round_to,
            self.global_ranking,
            request.tolerance,
            self.per_mac,
        )
        return plan, None


def plan_for_target(
    group_set: GroupSet,
    scores: dict[int, np.ndarray],
    target_flops: float,
    round_to: int = DEFAULT_ROUND_TO,
    global_ranking: bool = False,
    tolerance: float = 0.01,
    per_mac: bool = False,
) -> Plan:
    if not 0.0 < target_flops < 1.0:
        raise PruningError(f"target FLOPs reduction must be in (0, 1), got {target_flops}")
    if round_to < 1:
        raise PruningError(f"round_to must be >= 1, got {round_to}")
    order = {g: np.argsort(s, kind="stable") for g, s in scores.items()}
    builder = PlanBuilder(group_set, order, round_to)
    if global_ranking or per_mac:
        return search_global(builder, scores, target_flops, tolerance, per_mac)
    return search_uniform(builder, target_flops, tolerance)
