"""Calibrating the latency table against profiles of whole pruned models.

A layer timed alone costs something else than inside a model (warm caches, the runtime's
blocked layout flowing from layer to layer). So latency-aware planning profiles whole
pruned models under ONNX Runtime's profiler, scales each layer's table time by its
in-model time, proposes plans from the calibrated estimate, and keeps the profiled plan
that measured fastest, or, given a ``score`` (e.g. top-1 after BN re-estimation), the
best-scoring plan within ``speed_slack`` of the fastest, since plans that measure nearly
as fast can differ a lot in accuracy.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from torchslim.errors import PruningError
from torchslim.graph import GroupSet, apply_plan
from torchslim.latency.compare import export_for_timing
from torchslim.latency.cost import CalibratedLatencyModel, LatencyModel
from torchslim.latency.layers import layer_configs
from torchslim.latency.ort_profile import match_nodes, profile_nodes
from torchslim.pruning.exchange import minimize_cost
from torchslim.pruning.plan import Plan, PlanBuilder
from torchslim.pruning.search import search_scaled

SCORE_SAMPLES = 1000  # validation images a candidate plan's top-1 is measured on, where data is given
TILTS = (0.25, 0.5)  # resolution tilts tried as candidates (benchmarks/RESULTS.md has what they measured)

Score = Callable[[nn.Module], float]


@dataclass
class LatencyProblem:
    """A MACs-target plan search under a latency cost: what every candidate generator needs."""

    builder: PlanBuilder
    latency: LatencyModel
    model: nn.Module
    target: float
    tolerance: float
    spread: float  # how far a group's kept fraction may move from the uniform plan's


@dataclass
class ProfileSettings:
    """How plans are profiled: at what input, on how many threads, for how many runs."""

    input_size: int
    batch: int
    threads: int
    runs: int = 30
    rounds: int = 2  # plans proposed from the calibrated estimate
    tilts: tuple[float, ...] = TILTS


class Candidate(NamedTuple):
    label: str
    plan: Plan
    ms: float  # summed kernel time measured in the model


def profile_plan(
    model: nn.Module, group_set: GroupSet, mask: np.ndarray, settings: ProfileSettings, workdir: Path
) -> tuple[dict[str, float], float]:
    """Cut ``mask`` out of a copy of ``model``, export and profile it: per-layer in-model ms, kernel sum."""
    pruned = copy.deepcopy(model)
    if mask.any():
        apply_plan(pruned, group_set, mask)
    size, batch = settings.input_size, settings.batch
    path = export_for_timing(pruned, size, workdir / f"plan{len(list(workdir.iterdir()))}.onnx")
    nodes, kernel_sum = profile_nodes(path, batch, size, settings.threads, runs=settings.runs)
    with torch.no_grad():
        configs = layer_configs(pruned, size, batch)
    return match_nodes(nodes, configs), kernel_sum


def tilted_plan(problem: LatencyProblem, uniform: Plan, tilt: float) -> Plan | None:
    """The MACs-target plan whose groups keep fractions scaled by ``(resolution / mean) ** -tilt``.

    High-resolution layers cost more time per MAC (large activations, memory-bound depthwise
    kernels), so a positive tilt prunes them more and the low-resolution end less, at the same
    MACs. Each group stays within ``problem.spread`` of its fraction in ``uniform``. None if
    unreachable.
    """
    builder, latency_model, spread = problem.builder, problem.latency, problem.spread
    resolution = {}
    for group in latency_model.group_set.prunable():
        if group.index in builder.sizes and group.sources[0] in latency_model.configs:
            config = latency_model.configs[group.sources[0]]
            resolution[group.index] = max(1, config.height // max(1, config.stride))
    if not resolution:
        return None
    mean = float(np.exp(np.mean(np.log(list(resolution.values())))))
    scale = {g: (r / mean) ** -tilt for g, r in resolution.items()}
    fractions = {g: k / builder.sizes[g] for g, k in uniform.keep.items()}
    bounds = {g: (max(0.0, f - spread), min(1.0, f + spread)) for g, f in fractions.items()}
    try:
        return search_scaled(builder, problem.target, problem.tolerance, scale, bounds)
    except PruningError:
        return None


@dataclass
class CalibrationInfo:
    """What calibration measured: summed kernel ms of the profiled plans (ORT profiler, in-model)."""

    base_ms: float
    uniform_ms: float
    chosen_ms: float
    plans_profiled: int
    chosen: str  # "uniform", "table" (uncalibrated table plan), "tilt T" (tilted_plan) or "calibrated"
    profiles: list[dict] = field(default_factory=list)  # per profile: plan, estimated and measured ms
    chosen_by: str = "speed"  # "speed" (fastest measured) or "score" (best score within speed_slack of it)
    scores: list[dict] = field(default_factory=list)  # per scored plan: label, measured ms, score

    @property
    def measured_speedup(self) -> float:
        return self.base_ms / self.chosen_ms if self.chosen_ms > 0 else float("inf")


class _Profiler:
    """Profiles plans of one model; each profile refines the calibrated model and is remembered."""

    def __init__(self, problem: LatencyProblem, settings: ProfileSettings, workdir: Path) -> None:
        self.problem, self.settings, self.workdir = problem, settings, workdir
        self.calibrated = CalibratedLatencyModel(problem.latency)
        self.candidates: dict[bytes, Candidate] = {}
        self.log: list[dict] = []

    def profile(self, label: str, plan: Plan | None) -> float:
        group_set, settings = self.problem.latency.group_set, self.settings
        mask = plan.mask if plan is not None else np.zeros(len(group_set.roots), dtype=bool)
        estimated = self.calibrated.estimate(mask)
        in_model, kernel_sum = profile_plan(self.problem.model, group_set, mask, settings, self.workdir)
        reduction = float(plan.reduction) if plan is not None else 0.0
        self.log.append(
            {"plan": label, "estimated_ms": estimated, "measured_ms": kernel_sum, "macs_reduction": reduction}
        )
        self.calibrated.observe(mask, in_model)
        if plan is not None:
            self.candidates.setdefault(mask.tobytes(), Candidate(label, plan, kernel_sum))
        return kernel_sum

    def profile_new(self, label: str, plan: Plan | None) -> bool:
        """Profile ``plan`` unless it was profiled already; whether it was new."""
        if plan is None or plan.mask.tobytes() in self.candidates:
            return False
        self.profile(label, plan)
        return True

    def fastest(self) -> Plan:
        return min(self.candidates.values(), key=lambda c: c.ms).plan

    def reprofile_fastest(self, count: int = 3) -> None:
        """Candidates often differ by about one profile's noise: the fastest are profiled once more
        and keep their faster sum."""
        for key, candidate in sorted(self.candidates.items(), key=lambda item: item[1].ms)[:count]:
            again = self.profile(f"{candidate.label} (again)", candidate.plan)
            self.candidates[key] = candidate._replace(ms=min(candidate.ms, again))


def calibrated_minimize(
    problem: LatencyProblem,
    start_plan: Plan,
    settings: ProfileSettings,
    *,
    score: Score | None = None,
    speed_slack: float = 0.02,
) -> tuple[Plan, CalibratedLatencyModel, CalibrationInfo]:
    """:func:`~torchslim.pruning.exchange.minimize_cost` on table times calibrated by whole-model profiles.

    Profiles the unpruned model and ``start_plan`` (the uniform plan), the plan the uncalibrated
    table proposes, the :func:`tilted_plan` of each tilt, then up to ``settings.rounds`` plans from
    the calibrated estimate, each from the fastest plan measured so far; the three fastest are
    profiled again. Returns the fastest profiled plan (or, with ``score``, :func:`choose_by_score`'s
    choice), the calibrated model and a :class:`CalibrationInfo`.
    """
    with tempfile.TemporaryDirectory(prefix="torchslim-calibrate-") as workdir:
        profiler = _Profiler(problem, settings, Path(workdir))
        base_ms = profiler.profile("unpruned", None)
        profiler.profile("uniform", start_plan)
        _propose_candidates(problem, profiler, start_plan)
        profiler.reprofile_fastest()
        base_ms = min(base_ms, profiler.profile("unpruned (again)", None))
    candidates = list(profiler.candidates.values())
    scores: list[dict] = []
    if score is None:
        chosen = min(candidates, key=lambda c: c.ms)
    else:
        chosen, scores = choose_by_score(
            candidates, problem.model, problem.latency.group_set, score, speed_slack
        )
    info = CalibrationInfo(
        base_ms=base_ms,
        uniform_ms=profiler.candidates[start_plan.mask.tobytes()].ms,
        chosen_ms=chosen.ms,
        plans_profiled=len(profiler.log),
        chosen=chosen.label,
        profiles=profiler.log,
        chosen_by="speed" if score is None else "score",
        scores=scores,
    )
    return chosen.plan, profiler.calibrated, info


def _propose_candidates(problem: LatencyProblem, profiler: _Profiler, start_plan: Plan) -> None:
    """Profile the table's plan, the tilted plans, and plans from the calibrated estimate."""
    builder, target, tolerance, spread = problem.builder, problem.target, problem.tolerance, problem.spread
    table_plan = minimize_cost(builder, problem.latency, start_plan, target, tolerance, spread=spread)
    profiler.profile_new("table", table_plan)
    for tilt in profiler.settings.tilts:
        profiler.profile_new(f"tilt {tilt:g}", tilted_plan(problem, start_plan, tilt))
    for _ in range(profiler.settings.rounds):
        plan = minimize_cost(
            builder, profiler.calibrated, profiler.fastest(), target, tolerance, spread=spread
        )
        if not profiler.profile_new("calibrated", plan):
            break


def choose_by_score(
    candidates: list[Candidate],
    model: nn.Module,
    group_set: GroupSet,
    score: Score,
    speed_slack: float,
) -> tuple[Candidate, list[dict]]:
    """The best-scoring of ``candidates`` within ``speed_slack`` of the fastest (ties go to the
    faster), and a record of every score taken.

    Each plan is cut out of a copy of ``model`` and handed to ``score`` (higher is better, e.g.
    top-1 in percent); ``model`` is never changed. A score that is not finite is an error: the
    caller's function is broken, which is no reason to plan without calibration.
    """
    if speed_slack < 0:
        raise ValueError(f"speed_slack must be >= 0, got {speed_slack}")
    candidates = [Candidate(*c) for c in candidates]  # (label, plan, ms) tuples are welcome too
    fastest_ms = min(c.ms for c in candidates)
    near = sorted((c for c in candidates if c.ms <= fastest_ms * (1.0 + speed_slack)), key=lambda c: c.ms)
    record, best, best_score = [], None, -float("inf")
    for candidate in near:
        pruned = copy.deepcopy(model)
        apply_plan(pruned, group_set, candidate.plan.mask)
        value = float(score(pruned))
        if not np.isfinite(value):
            raise PruningError(f"the plan score returned {value} for the {candidate.label} plan")
        record.append({"plan": candidate.label, "measured_ms": candidate.ms, "score": value})
        if value > best_score:
            best, best_score = candidate, value
    return best, record
