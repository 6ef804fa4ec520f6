"""The pruning API: trace, select, score, plan for a target, cut, and check.

result = torchslim.prune(model, torch.randn(1, 3, 224, 224), target_flops=0.5)
result.model      # an ordinary, smaller nn.Module
result.report     # MACs/params before and after, groups pruned and skipped
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from torchslim.criteria import CRITERIA, DEFAULT_CRITERION, score_group
from torchslim.errors import PruningError
from torchslim.graph import (
    GroupSet,
    apply_plan,
    build_groups,
    compare_outputs,
    oracle_reference,
    select_groups,
    trace_channels,
)
from torchslim.pruning.counting import channel_counts, count_params
from torchslim.pruning.plan import Plan
from torchslim.pruning.planner import DEFAULT_ROUND_TO, MacsPlanner, Planner, PlanRequest

TOTALS = (
    "macs_before",
    "macs_after",
    "params_before",
    "params_after",
    "flops_reduction",
    "groups_pruned",
    "seconds",
)


@dataclass
class PruneReport:
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    flops_reduction: float
    groups_pruned: int
    groups_skipped: int
    skipped: dict[str, str] = field(default_factory=dict)  # group name -> reason
    channels: dict[str, list[int]] = field(default_factory=dict)  # layer -> [before, after]
    cut: dict[str, list] = field(default_factory=dict)  # group name -> [kind, units before, after]
    seconds: float = 0.0
    verified: bool | None = None
    max_abs_diff: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def cut_by_kind(self) -> dict[str, int]:
        """How many groups of each kind (heads, mlp hidden, embedding, conv channels) were cut."""
        counts: dict[str, int] = {}
        for kind, _, _ in self.cut.values():
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def totals(self) -> dict:
        """The counts every caller reports of a prune (the CLI's payload, a strategy's event)."""
        return {key: getattr(self, key) for key in TOTALS}


@dataclass
class PruneResult:
    model: nn.Module
    report: PruneReport
    group_set: GroupSet
    plan: Plan
    plan_info: Any = None  # what the planner reported (latency-aware planning: a LatencyPlanInfo)


def analyze(
    model: nn.Module,
    example_input: torch.Tensor,
    pruned_params: str | None = None,
    aliases: dict[str, str] | None = None,
) -> GroupSet:
    """Trace ``model`` and return its groups, those not selected by ``pruned_params`` marked kept."""
    graph, _ = trace_channels(model, example_input)
    group_set = build_groups(graph)
    select_groups(group_set, model, pruned_params, aliases)
    return group_set


def rank_units(group_set: GroupSet, model: nn.Module, criterion: str) -> dict[int, np.ndarray]:
    """Scores of every prunable group's units under ``criterion``."""
    if criterion not in CRITERIA:
        raise PruningError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA.list())}")
    return {g.index: score_group(group_set, g, model, criterion) for g in group_set.prunable()}


def prune(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    target_flops: float | None,
    criterion: str = DEFAULT_CRITERION,
    pruned_params: str | None = None,
    round_to: int = DEFAULT_ROUND_TO,
    global_ranking: bool | str = False,
    aliases: dict[str, str] | None = None,
    inplace: bool = False,
    verify: bool = False,
    tolerance: float = 0.01,
    planner: Planner | None = None,
) -> PruneResult:
    """Remove channels from ``model`` so that its MACs drop by ``target_flops`` (a fraction).

    The returned model is a pruned copy unless ``inplace``. With ``verify`` the correctness
    oracle runs on ``example_input``: the unpruned model with the removed channels ignored
    must give the same outputs. ``planner`` replaces the default MACs planner (``round_to``,
    ``global_ranking``: True ranks all units by normalized score, ``"per_mac"`` by score per MAC
    saved, which balances heads, MLP and embedding), e.g. :class:`torchslim.latency.planner.LatencyPlanner`.
    """
    started = time.perf_counter()
    group_set = analyze(model, example_input, pruned_params, aliases)
    scores = rank_units(group_set, model, criterion)
    planner = planner or MacsPlanner(round_to, bool(global_ranking), global_ranking == "per_mac")
    request = PlanRequest(model, group_set, scores, example_input, target_flops, tolerance)
    plan, plan_info = planner.plan(request)
    result = cut(model, group_set, plan, example_input, inplace=inplace, verify=verify, started=started)
    result.plan_info = plan_info
    return result


def cut(
    model: nn.Module,
    group_set: GroupSet,
    plan: Plan,
    example_input: torch.Tensor,
    *,
    inplace: bool,
    verify: bool,
    started: float,
) -> PruneResult:
    """Apply ``plan`` (to a copy unless ``inplace``), report it, and run the oracle when ``verify``.

    ``started`` is when the caller began (perf_counter): the report's seconds run from there to
    the pruned model, not counting the oracle's reference copy.
    """
    before_channels = channel_counts(model)
    params_before = count_params(model)
    reference_started = time.perf_counter()
    reference = oracle_reference(model, group_set, plan.mask) if verify else None
    reference_seconds = time.perf_counter() - reference_started  # checking is not part of pruning's cost
    pruned = model if inplace else copy.deepcopy(model)
    apply_plan(pruned, group_set, plan.mask)
    seconds = time.perf_counter() - started - reference_seconds
    after_channels = channel_counts(pruned)
    report = PruneReport(
        macs_before=plan.macs_before,
        macs_after=plan.macs_after,
        params_before=params_before,
        params_after=count_params(pruned),
        flops_reduction=plan.reduction,
        groups_pruned=sum(1 for g, k in plan.keep.items() if k < group_set.groups[g].size),
        groups_skipped=len(group_set.skipped()),
        skipped={g.name: g.reason for g in group_set.skipped()},
        channels={
            n: [before_channels[n], c] for n, c in after_channels.items() if c != before_channels.get(n)
        },
        seconds=seconds,
        cut={
            group_set.groups[g].name: [group_set.groups[g].kind, group_set.groups[g].size, k]
            for g, k in plan.keep.items()
            if k < group_set.groups[g].size
        },
    )
    if reference is not None:
        report.max_abs_diff, report.verified = compare_outputs(reference, pruned, example_input)
    return PruneResult(pruned, report, group_set, plan)
