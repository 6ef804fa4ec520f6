"""Cost models: what a plan search measures a plan by. MACs by default; latency plugs in here.

A cost model works on shapes only (the channel graph and a removal mask), so a search can
try thousands of plans. ``torchslim.latency`` provides models of a runtime's latency.
"""

from __future__ import annotations

import numpy as np

from torchslim.graph import GroupSet, plan_macs
from torchslim.pruning.plan import Plan


class CostModel:
    """A cost of the model with a removal mask applied. Subclasses give ``estimate`` and ``base``."""

    what = "cost"  # what the cost is, for messages ("MACs", "estimated latency")
    target_name = "cost target"

    def estimate(self, mask: np.ndarray) -> float:
        raise NotImplementedError

    def base(self) -> float:
        """The cost of the unpruned model."""
        raise NotImplementedError

    def reduction(self, plan: Plan) -> float:
        """The fraction of the unpruned model's cost that ``plan`` removes."""
        return 1.0 - self.estimate(plan.mask) / self.base()


class MacsCost(CostModel):
    """Multiply-accumulates of conv and linear layers, as the plan builder counts them."""

    what = "MACs"
    target_name = "FLOPs target"

    def __init__(self, group_set: GroupSet) -> None:
        self.group_set = group_set
        self._base = float(plan_macs(group_set, np.zeros(len(group_set.roots), dtype=bool)))

    def estimate(self, mask: np.ndarray) -> float:
        return float(plan_macs(self.group_set, mask))

    def base(self) -> float:
        return self._base

    def reduction(self, plan: Plan) -> float:
        return plan.reduction  # counted when the plan was built
