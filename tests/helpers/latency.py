"""A synthetic latency runtime (instant, deterministic) and the model the latency tests plan on."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from torchslim.latency.blocks import allowed_counts
from torchslim.latency.layers import ConvConfig
from torchslim.latency.table import LatencyTable
from torchslim.pruning.plan import PlanBuilder
from torchslim.pruning.prune import analyze, rank_units


class Wide(nn.Module):
    """Stem, a depthwise-separable block, a residual pair and a classifier, with widths of 48-96."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 48, 3, 2, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU())
        self.dw = nn.Sequential(
            nn.Conv2d(48, 48, 3, 1, 1, groups=48, bias=False), nn.BatchNorm2d(48), nn.ReLU()
        )
        self.pw = nn.Sequential(nn.Conv2d(48, 96, 1, bias=False), nn.BatchNorm2d(96), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(96, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(64, 96, 3, 1, 1, bias=False), nn.BatchNorm2d(96))
        self.fc = nn.Linear(96, 10)

    def forward(self, x):
        x = self.pw(self.dw(self.stem(x)))
        x = (x + self.b(self.a(x))).relu()
        return self.fc(x.mean((2, 3)))


def staircase_cost(config: ConvConfig, block: int = 16) -> float:
    """A synthetic runtime that pads every channel count up to ``block`` (like ONNX Runtime's NCHWc)."""
    pad = lambda c: math.ceil(c / block) * block  # noqa: E731
    out_hw = config.height * config.width / config.stride**2
    per_group_in = 1 if config.depthwise else pad(config.in_channels)
    return 1e-6 * config.batch * out_hw * pad(config.out_channels) * per_group_in * config.kernel**2 + 0.01


class SyntheticTable(LatencyTable):
    """A LatencyTable whose 'measurements' come from a formula: deterministic and instant."""

    def __init__(self, tmp_path, block: int = 16, **kwargs) -> None:
        super().__init__("onnxruntime", threads=2, cache_dir=tmp_path, **kwargs)
        self.block = block

    def _measure(self, config: ConvConfig) -> float:
        return staircase_cost(config, self.block)

    def for_probes(self) -> LatencyTable:
        return self


def plan_builder(model, example, allowed_block=None):
    group_set = analyze(model, example)
    scores = rank_units(group_set, model, "l1_norm")
    order = {g: np.argsort(s, kind="stable") for g, s in scores.items()}
    sizes = {g: len(o) for g, o in order.items()}
    allowed = allowed_counts(sizes, dict.fromkeys(sizes, allowed_block)) if allowed_block else None
    return group_set, PlanBuilder(group_set, order, 8, allowed=allowed)
