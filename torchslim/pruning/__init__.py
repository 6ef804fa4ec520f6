"""From channel scores to a smaller model: counting, cost models, plan search, and ``prune()``."""

from torchslim.pruning.cost import CostModel, MacsCost
from torchslim.pruning.counting import Profile, channel_counts, count_params, human, profile_model
from torchslim.pruning.plan import Plan, PlanBuilder
from torchslim.pruning.planner import DEFAULT_ROUND_TO, MacsPlanner, Planner, PlanRequest, plan_for_target
from torchslim.pruning.prune import PruneReport, PruneResult, analyze, cut, prune, rank_units

__all__ = [
    "DEFAULT_ROUND_TO",
    "CostModel",
    "MacsCost",
    "MacsPlanner",
    "Plan",
    "PlanBuilder",
    "PlanRequest",
    "Planner",
    "Profile",
    "PruneReport",
    "PruneResult",
    "analyze",
    "channel_counts",
    "count_params",
    "cut",
    "human",
    "plan_for_target",
    "profile_model",
    "prune",
    "rank_units",
]
