"""Latency cost models: a plan's estimated latency from the layer table, optionally calibrated."""

from __future__ import annotations

import numpy as np
from torch import nn

from torchslim.graph import DENSE_ROLES, GroupSet
from torchslim.latency.layers import ConvConfig, layer_configs
from torchslim.latency.table import LatencyTable
from torchslim.pruning.cost import CostModel


class LatencyModel(CostModel):
    """Estimated latency of a pruning plan: the table's latency of each layer at the plan's channel counts.

    Works on shapes only (the traced channel graph and a removal mask), like
    MAC counting, so trying a plan costs a dictionary lookup per layer once the
    table holds its configurations.
    """

    what = "the estimated latency"
    target_name = "latency target"

    def __init__(
        self, group_set: GroupSet, model: nn.Module, input_size: int, table: LatencyTable, batch: int = 1
    ) -> None:
        self.group_set = group_set
        self.table = table
        self.configs = layer_configs(model, input_size, batch)
        self.uses = [
            u for u in group_set.graph.uses_of(*DENSE_ROLES, "depthwise", "fixed") if u.module in self.configs
        ]

    def configs_at(self, mask: np.ndarray) -> dict[str, ConvConfig]:
        """Every costed layer's configuration after removing ``mask``'s channels."""
        configs = {}
        for use in self.uses:
            base = self.configs[use.module]
            if use.role == "fixed":
                configs[use.module] = base
                continue
            cin = self._kept(use.in_ids, mask) if use.in_ids is not None else base.in_channels
            cout = cin if use.role == "depthwise" else self._kept(use.out_ids, mask)
            configs[use.module] = base.with_channels(max(cin, 1), max(cout, 1))
        return configs

    def _kept(self, ids: np.ndarray, mask: np.ndarray) -> int:
        return int(self.group_set.kept(ids, mask).sum())

    def estimate(self, mask: np.ndarray) -> float:
        return float(sum(self.table.lookup(c) for c in self.configs_at(mask).values()))

    def base(self) -> float:
        return self.estimate(np.zeros(len(self.group_set.roots), dtype=bool))


class CalibratedLatencyModel(CostModel):
    """A :class:`LatencyModel` whose layer times are scaled to what they cost in the model.

    ``observe(mask, in_model)`` records one profiled plan; a layer's factor is
    the median over the observed plans of in-model ms over table ms at that
    plan's configuration (1 for a layer never observed).
    """

    what = "the calibrated latency"
    target_name = "latency target"

    def __init__(self, base: LatencyModel) -> None:
        self.base_model = base
        self.ratios: dict[str, list[float]] = {}
        self.factors: dict[str, float] = {}

    def observe(self, mask: np.ndarray, in_model: dict[str, float]) -> None:
        configs = self.base_model.configs_at(mask)
        for name, config in configs.items():
            table_ms = self.base_model.table.lookup(config)
            if name in in_model and table_ms > 0:
                self.ratios.setdefault(name, []).append(in_model[name] / table_ms)
        self.factors = {name: float(np.median(values)) for name, values in self.ratios.items()}

    def estimate(self, mask: np.ndarray) -> float:
        configs = self.base_model.configs_at(mask)
        return float(
            sum(self.base_model.table.lookup(c) * self.factors.get(n, 1.0) for n, c in configs.items())
        )

    def base(self) -> float:
        return self.estimate(np.zeros(len(self.base_model.group_set.roots), dtype=bool))
