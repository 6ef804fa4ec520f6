"""Latency-aware planning: the latency cost model plugged into the plan search.

    planner = LatencyPlanner(LatencyOptions(runtime="onnxruntime"))
    result = torchslim.prune(model, example, target_flops=0.5, planner=planner)
    result.plan_info   # a LatencyPlanInfo: blocks, estimated and measured latencies

Channel counts become multiples of the block each group's layers run fast at (read off
measured latency staircases, or a fixed ``align``); with a MACs target, channels are traded
between groups to lower the latency estimated from a per-machine layer table, calibrated on
ONNX Runtime by profiling whole pruned models; with a latency target, one ratio is bisected
until the estimated latency drops by it. With both, both must hold.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from torchslim.errors import PruningError
from torchslim.latency.blocks import allowed_counts, detect_blocks, group_blocks
from torchslim.latency.calibration import (
    CalibrationInfo,
    LatencyProblem,
    ProfileSettings,
    Score,
    calibrated_minimize,
)
from torchslim.latency.cost import CalibratedLatencyModel, LatencyModel
from torchslim.latency.machine import DEFAULT_THREADS
from torchslim.latency.ort_profile import CalibrationError
from torchslim.latency.table import LatencyTable
from torchslim.pruning.exchange import minimize_cost
from torchslim.pruning.plan import Plan, PlanBuilder
from torchslim.pruning.planner import PlanRequest
from torchslim.pruning.search import search_uniform


@dataclass
class LatencyOptions:
    """Where and how latency is measured, and how far plans may move for it."""

    runtime: str = "onnxruntime"
    threads: int = DEFAULT_THREADS
    batch_size: int = 1
    align: str | int = "auto"  # "auto": each group's measured block; an int: one block for all groups
    spread: float = 0.25  # how far a group's kept fraction may move from the uniform plan's
    calibrate: bool | None = None  # None: on ONNX Runtime with a MACs target
    speed_slack: float = 0.02  # with a score: plans within this of the fastest are scored
    table: LatencyTable | None = None  # None: the cached table of this runtime and machine
    cache_dir: str | os.PathLike | None = None


@dataclass
class LatencyPlanInfo:
    """What latency-aware planning decided and expects."""

    runtime: str
    threads: int
    batch_size: int
    blocks: dict[str, int]
    estimated_base_ms: float
    estimated_uniform_ms: float | None
    estimated_ms: float
    table_path: str
    table_entries: int
    measured: int  # layer configurations measured now (not found in the cache)
    calibration: dict | None = None  # whole-model profiles (torchslim.latency.calibration), when calibrated

    @property
    def estimated_speedup(self) -> float:
        return self.estimated_base_ms / self.estimated_ms if self.estimated_ms > 0 else float("inf")

    def as_dict(self) -> dict:
        data = asdict(self)
        data["estimated_speedup"] = self.estimated_speedup
        return data


class LatencyPlanner:
    """A planner for :func:`torchslim.prune`: a MACs target (the request's ``target_flops``), a
    ``latency_target`` (a fraction of the estimated latency), or both.

    ``score(pruned_copy) -> float`` (higher is better) makes a calibrated plan weigh accuracy:
    the best-scoring profiled plan within ``options.speed_slack`` of the fastest wins.
    """

    def __init__(
        self,
        options: LatencyOptions | None = None,
        *,
        latency_target: float | None = None,
        score: Score | None = None,
    ) -> None:
        self.options = options or LatencyOptions()
        self.latency_target = latency_target
        self.score = score

    def plan(self, request: PlanRequest) -> tuple[Plan, LatencyPlanInfo]:
        _check_targets(request.target_flops, self.latency_target)
        options = self.options
        table = options.table
        if table is None:
            table = LatencyTable(options.runtime, threads=options.threads, cache_dir=options.cache_dir)
        measured_before = table.measured
        builder, blocks = _aligned_builder(request, table, options.align)
        input_size = int(request.example_input.shape[-1])
        latency = LatencyModel(request.group_set, request.model, input_size, table, options.batch_size)
        outcome = _Outcome(latency)
        if request.target_flops is not None:
            outcome = self._macs_target_plan(request, builder, latency, table)
        if self.latency_target is not None and not outcome.reaches(self.latency_target, request.tolerance):
            outcome.plan = search_uniform(builder, self.latency_target, request.tolerance, outcome.latency)
        if self.score is not None and outcome.calibration is None:
            warnings.warn(
                "the plan score was not used: only a calibrated MACs-target plan has measured "
                "alternatives to choose from",
                stacklevel=3,
            )
        table.save()
        return outcome.plan, outcome.info(options, table, blocks, table.measured - measured_before)

    def _macs_target_plan(
        self, request: PlanRequest, builder: PlanBuilder, latency: LatencyModel, table: LatencyTable
    ) -> _Outcome:
        """The uniform MACs-target plan, then the exchange that lowers its (calibrated) latency."""
        options, target, tolerance = self.options, request.target_flops, request.tolerance
        uniform = search_uniform(builder, target, tolerance)
        outcome = _Outcome(latency, uniform_ms=latency.estimate(uniform.mask))
        calibrate = options.calibrate if options.calibrate is not None else options.runtime == "onnxruntime"
        problem = LatencyProblem(builder, latency, request.model, target, tolerance, options.spread)
        if calibrate:
            settings = ProfileSettings(
                int(request.example_input.shape[-1]), options.batch_size, table.threads
            )
            try:
                plan, calibrated, info = calibrated_minimize(
                    problem, uniform, settings, score=self.score, speed_slack=options.speed_slack
                )
            except CalibrationError as error:  # said, recorded, and planned from the table alone
                warnings.warn(f"latency calibration skipped: {error}", stacklevel=4)
                outcome.calibration_error = str(error)
            else:
                calibrated_uniform = calibrated.estimate(uniform.mask)
                return _Outcome(calibrated, calibrated_uniform, plan, info)
        outcome.plan = minimize_cost(builder, latency, uniform, target, tolerance, spread=options.spread)
        return outcome


@dataclass
class _Outcome:
    """The plan so far, the cost model it was judged by, and what calibration said."""

    latency: LatencyModel | CalibratedLatencyModel
    uniform_ms: float | None = None
    plan: Plan | None = None
    calibration: CalibrationInfo | None = None
    calibration_error: str | None = None

    def reaches(self, latency_target: float, tolerance: float) -> bool:
        if self.plan is None:
            return False
        return self.latency.reduction(self.plan) >= latency_target - tolerance

    def info(
        self, options: LatencyOptions, table: LatencyTable, blocks: dict[str, int], measured: int
    ) -> LatencyPlanInfo:
        if self.calibration_error:
            calibration = {"error": self.calibration_error}
        elif self.calibration is not None:
            calibration = {**asdict(self.calibration), "measured_speedup": self.calibration.measured_speedup}
        else:
            calibration = None
        return LatencyPlanInfo(
            runtime=options.runtime,
            threads=table.threads,
            batch_size=options.batch_size,
            blocks=blocks,
            estimated_base_ms=self.latency.base(),
            estimated_uniform_ms=self.uniform_ms,
            estimated_ms=self.latency.estimate(self.plan.mask),
            table_path=str(table.path),
            table_entries=len(table),
            measured=measured,
            calibration=calibration,
        )


def _check_targets(target_flops: float | None, latency_target: float | None) -> None:
    if target_flops is None and latency_target is None:
        raise PruningError("give target_flops, latency_target or both")
    for name, value in (("target_flops", target_flops), ("latency_target", latency_target)):
        if value is not None and not 0.0 < value < 1.0:
            raise PruningError(f"{name} must be in (0, 1), got {value}")


def _aligned_builder(request: PlanRequest, table: LatencyTable, align: str | int) -> tuple[PlanBuilder, dict]:
    """A plan builder whose allowed counts are multiples of each group's block, and the blocks."""
    order = {g: np.argsort(s, kind="stable") for g, s in request.scores.items()}
    sizes = {g: len(o) for g, o in order.items()}
    if align == "auto":
        blocks = detect_blocks(table.for_probes())
        allowed = allowed_counts(sizes, group_blocks(request.group_set, blocks))
    else:
        blocks = {"all": int(align)}
        allowed = allowed_counts(sizes, dict.fromkeys(sizes, int(align)))
    return PlanBuilder(request.group_set, order, max(blocks.values()), allowed=allowed), blocks
