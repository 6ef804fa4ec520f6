"""Sensitivity analysis: how much the metric drops when one group alone loses its lowest-scored channels.

For every prunable group and every ratio, the ``round(size * ratio)`` lowest-scored
units of that group alone are removed, the metric is measured on a cached
validation slice, and the group is restored. Removal is the correctness oracle's
view of pruning: on a working copy of the model, the input weights of every
conv / linear layer that consumes the removed channels are zeroed (exactly the
function of the physically pruned model, proven by the oracle tests), so no graph
is rebuilt and no module resized per try. Evaluation runs under
``torch.inference_mode`` on batches cached once on the device.

The table file (JSON, human-readable, ``format: torchslim.sensitivity/1``)::

    {
      "format": "torchslim.sensitivity/1",
      "model": "mobilenet_v1",            # base model name
      "fingerprint": "3f2a...",           # hash of the weights and shapes the scan ran on
      "criterion": "l1_norm",             # which channels go first
      "metric": "top1_acc",               # top1_acc or top5_acc, in percent
      "data": "fashion-mnist val[:1000]", # the validation slice
      "samples": 1000,
      "recalibrated": true,               # batch norms re-estimated after each removal
      "base_metric": 91.3,                # the metric with nothing removed
      "sizes": {"features.1.pointwise.conv": 32, ...},          # units per group
      "groups": {                          # group name -> ratio -> result
        "features.1.pointwise.conv": {"0.1": {"metric": 91.1, "loss": 0.0022}, ...},
        ...
      }
    }

``loss`` is the relative drop ``(base - metric) / base`` (negative when removing
channels helped). When the run re-estimates batch-norm statistics after pruning
(``after_prune``), each try is measured after that re-estimation too, on the
masked copy, whose buffers are restored afterwards: without it, removing
channels anywhere collapses the downstream statistics and every curve
saturates near chance, which says nothing about which layer matters. A file is
reused when model, fingerprint, criterion, metric, data slice and
``recalibrated`` match; missing (group, ratio) entries are scanned and everything else
is kept, so a killed scan continues where it stopped (the file is rewritten
atomically after every evaluation) and several machines can scan disjoint
groups (``shard``) whose files :func:`merge_tables` joins.

:func:`plan_from_sensitivities` turns a table into per-group keep counts that
remove a MACs target with the least predicted loss, on the interpolated curves
(linear between scanned ratios, made non-decreasing), in ``round_to`` steps:
by default one step at a time from the group whose predicted loss grows least
per MAC removed (``allocation="marginal"``), or by bisecting the seed's one
allowed-loss level for all groups (``"level"``); then single groups are nudged
by one step until the target is within tolerance.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from torchslim.criteria import data_criterion, prepare_data_criterion, score_group
from torchslim.engine import accuracy_counts
from torchslim.errors import PruningError
from torchslim.graph import Group, GroupSet
from torchslim.plan import Plan, PlanBuilder

FORMAT = "torchslim.sensitivity/1"
DEFAULT_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MATCH_KEYS = ("model", "fingerprint", "criterion", "metric", "data", "samples", "recalibrated")
METRICS = {"top1_acc": 0, "top5_acc": 1}
FLAT_SLOPE = 1e-6

Batch = tuple[torch.Tensor, torch.Tensor]


def ratio_key(ratio: float) -> str:
    """The JSON key of a ratio: ``0.1`` -> ``"0.1"`` (4 significant decimals)."""
    return f"{round(float(ratio), 4):g}"


def ratios_from_delta(delta: float) -> list[float]:
    """``delta_rate`` -> the scanned ratios: 0.1 -> 0.1 ... 0.9; 0.2 -> 0.2 ... 0.8."""
    if not 0.0 < delta < 1.0:
        raise PruningError(f"delta_rate must be in (0, 1), got {delta}")
    count = int(math.floor(1.0 / delta + 1e-9))
    ratios = [round(delta * i, 4) for i in range(1, count + 1)]
    return [r for r in ratios if r < 1.0 - 1e-9]


# ----------------------------------------------------------------------------- the table


@dataclass
class SensitivityTable:
    """The metric per (group, ratio) plus what the scan ran on; see the module docstring for the file."""

    model: str
    fingerprint: str
    criterion: str
    metric: str
    data: str
    samples: int
    recalibrated: bool = False  # measured after the run's after-prune hook (batch-norm re-estimation)
    base_metric: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    groups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    # -- file format -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "criterion": self.criterion,
            "metric": self.metric,
            "data": self.data,
            "samples": self.samples,
            "recalibrated": self.recalibrated,
            "base_metric": self.base_metric,
            "sizes": dict(self.sizes),
            "groups": {
                name: dict(sorted(r.items(), key=lambda kv: float(kv[0]))) for name, r in self.groups.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> SensitivityTable:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PruningError(f"{source} is not a torchslim sensitivity table (expected format {FORMAT!r})")
        try:
            return cls(
                model=str(data["model"]),
                fingerprint=str(data["fingerprint"]),
                criterion=str(data["criterion"]),
                metric=str(data["metric"]),
                data=str(data["data"]),
                samples=int(data["samples"]),
                recalibrated=bool(data.get("recalibrated", False)),
                base_metric=None if data.get("base_metric") is None else float(data["base_metric"]),
                sizes={str(k): int(v) for k, v in data.get("sizes", {}).items()},
                groups={
                    str(name): {
                        ratio_key(float(r)): {"metric": float(v["metric"]), "loss": float(v["loss"])}
                        for r, v in ratios.items()
                    }
                    for name, ratios in data.get("groups", {}).items()
                },
            )
        except (KeyError, TypeError, ValueError) as error:
            raise PruningError(
                f"{source}: malformed sensitivity table ({type(error).__name__}: {error})"
            ) from None

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same directory, then rename over ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | Path) -> SensitivityTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PruningError(f"cannot read sensitivity table {path}: {error}") from None
        return cls.from_dict(data, str(path))

    # -- queries ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in MATCH_KEYS}

    def mismatches(self, other: SensitivityTable) -> list[str]:
        """``key: ours != theirs`` for every identity key that differs."""
        return [
            f"{k}: {getattr(self, k)!r} != {getattr(other, k)!r}"
            for k in MATCH_KEYS
            if getattr(self, k) != getattr(other, k)
        ]

    def has(self, group: str, ratio: float) -> bool:
        return ratio_key(ratio) in self.groups.get(group, {})

    def record(self, group: str, ratio: float, metric: float) -> dict[str, float]:
        base = self.base_metric if self.base_metric is not None else metric
        loss = (base - metric) / base if base > 0 else base - metric
        entry = {"metric": float(metric), "loss": float(loss)}
        self.groups.setdefault(group, {})[ratio_key(ratio)] = entry
        return entry

    def curve(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        """(ratios, losses) of ``group``, starting at (0, 0), sorted, losses made non-decreasing.

        Removing more channels of one layer cannot really help; a dip is noise of
        the validation slice, so the curve keeps the running maximum.
        """
        points = sorted((float(r), v["loss"]) for r, v in self.groups.get(group, {}).items())
        ratios = np.array([0.0] + [r for r, _ in points])
        losses = np.maximum.accumulate(np.array([0.0] + [max(loss, 0.0) for _, loss in points]))
        return ratios, losses


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of every parameter and buffer (names, shapes, values): which weights a table is for."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def open_table(path: str | Path | None, fresh: SensitivityTable) -> SensitivityTable:
    """The table at ``path`` when it is for the same model, weights, criterion, metric and data; else ``fresh``.

    A file that exists but describes another scan is an error rather than being
    overwritten: it may hold hours of work. Delete it or choose another path.
    """
    if path is None or not Path(path).exists():
        return fresh
    table = SensitivityTable.load(path)
    differences = table.mismatches(fresh)
    if differences:
        raise PruningError(
            f"sensitivity table {path} belongs to another scan ({'; '.join(differences)}); "
            "delete it or choose another file"
        )
    table.sizes.update(fresh.sizes)
    return table


def merge_tables(tables: Sequence[SensitivityTable]) -> SensitivityTable:
    """One table holding every (group, ratio) of ``tables``; they must describe the same scan.

    Entries present in several tables must agree (to 1e-6); the base metric is the first table's.
    """
    if not tables:
        raise PruningError("nothing to merge: no sensitivity tables given")
    merged = copy.deepcopy(tables[0])
    for table in tables[1:]:
        differences = merged.mismatches(table)
        if differences:
            raise PruningError(
                f"cannot merge sensitivity tables of different scans: {'; '.join(differences)}"
            )
        if merged.base_metric is None:
            merged.base_metric = table.base_metric
        merged.sizes.update(table.sizes)
        for name, ratios in table.groups.items():
            target = merged.groups.setdefault(name, {})
            for key, entry in ratios.items():
                if key in target and abs(target[key]["metric"] - entry["metric"]) > 1e-6:
                    raise PruningError(
                        f"cannot merge: group {name} at ratio {key} has metric {target[key]['metric']} "
                        f"in one table and {entry['metric']} in another"
                    )
                target.setdefault(key, dict(entry))
    return merged


# ----------------------------------------------------------------------------- evaluation on a cached slice


def cache_batches(loader: Iterable, samples: int | None, device: torch.device | str) -> list[Batch]:
    """The first ``samples`` (all when None) items of ``loader`` as batches on ``device``, read once."""
    device = torch.device(device)
    batches: list[Batch] = []
    seen = 0
    for images, targets in loader:
        if samples is not None and seen + len(targets) > samples:
            images, targets = images[: samples - seen], targets[: samples - seen]
        if len(targets):
            batches.append((images.to(device), targets.to(device)))
            seen += len(targets)
        if samples is not None and seen >= samples:
            break
    if not batches:
        raise PruningError("the validation slice is empty: no samples to measure sensitivities on")
    return batches


def slice_samples(dataset_size: int, eval_rate: float | None = None, limit: int | None = None) -> int:
    """How many validation samples a scan uses: ``eval_rate`` of them, at most ``limit``, at least one."""
    count = dataset_size if eval_rate is None else int(math.ceil(eval_rate * dataset_size))
    if limit is not None:
        count = min(count, limit)
    return max(1, min(count, dataset_size))


def evaluate_batches(model: nn.Module, batches: Sequence[Batch], metric: str = "top1_acc") -> float:
    """Top-1 or top-5 accuracy (percent) of ``model`` on cached batches, in eval mode, without autograd."""
    column = METRICS.get(metric)
    if column is None:
        raise PruningError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    was_training = model.training
    model.eval()
    correct = 0
    total = 0
    try:
        with torch.inference_mode():
            for images, targets in batches:
                correct += int(accuracy_counts(model(images), targets)[column])
                total += len(targets)
    finally:
        model.train(was_training)
    return 100.0 * correct / max(total, 1)


def top1_score(
    batches: Sequence[Batch], before: Callable[[nn.Module], Any] | None = None
) -> Callable[[nn.Module], float]:
    """``score(model)``: ``before(model)`` (e.g. BN re-estimation of a pruned copy), then top-1 on ``batches``."""

    def score(model: nn.Module) -> float:
        if before is not None:
            before(model)
        return evaluate_batches(model, batches)

    return score


def group_scores(
    group_set: GroupSet,
    model: nn.Module,
    criterion: str,
    batches: Iterable | None = None,
    *,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> dict[int, np.ndarray]:
    """Scores of every prunable group; a data criterion is first fed ``batches`` (train batches)."""
    data = data_criterion(criterion)
    if data is not None:
        if batches is None:
            raise PruningError(f"criterion {criterion!r} needs training batches to score channels")
        kwargs = {} if max_batches is None else {"max_batches": max_batches}
        prepare_data_criterion(model, data, batches, device=device, **kwargs)
    return {g.index: score_group(group_set, g, model, criterion) for g in group_set.prunable()}


# ----------------------------------------------------------------------------- the scan


class _GroupMasker:
    """Zeroes the consumer inputs of one group's units on a working copy, and puts them back."""

    def __init__(self, model: nn.Module, group_set: GroupSet, group: Group) -> None:
        modules = dict(model.named_modules())
        self.targets: list[tuple[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor]] = []
        for use in group_set.graph.uses:
            if use.role not in ("conv", "linear") or use.in_ids is None:
                continue
            positions, units = group_set.positions(use.in_ids, group)
            if not len(positions):
                continue
            weight = modules[use.module].weight
            index = torch.from_numpy(positions).to(weight.device)
            self.targets.append((weight, index, units, weight.detach().index_select(1, index).clone()))

    @torch.no_grad()
    def remove(self, units: np.ndarray) -> None:
        self.restore()
        for weight, index, position_units, _ in self.targets:
            hit = np.isin(position_units, units)
            if hit.any():
                weight.index_fill_(1, index[torch.from_numpy(hit).to(index.device)], 0.0)

    @torch.no_grad()
    def restore(self) -> None:
        for weight, index, _, original in self.targets:
            weight.index_copy_(1, index, original)


def scan_sensitivity(
    model: nn.Module,
    group_set: GroupSet,
    scores: dict[int, np.ndarray],
    batches: Sequence[Batch],
    table: SensitivityTable,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    path: str | Path | None = None,
    groups: Sequence[str] | None = None,
    progress: bool = True,
    on_result: Callable[[str, float, dict[str, float]], None] | None = None,
    after_mask: Callable[[nn.Module], Any] | None = None,
) -> SensitivityTable:
    """Fill ``table`` with every missing (prunable group, ratio) and return it.

    ``model`` itself is never modified (a working copy is masked). ``groups``
    restricts the scan to those group names (a shard). With ``path`` the table is
    written after the base metric and after every single evaluation, atomically,
    so a killed scan loses at most the evaluation in flight. ``on_result(group,
    ratio, entry)`` is called after each evaluation (progress reporting, tests).

    ``after_mask(model)`` runs on the masked copy before each measurement (the
    base one included), e.g. batch-norm re-estimation, so that sensitivities are
    measured the way the pruned model will be used; the copy's buffers are put
    back after each try. Set ``table.recalibrated`` accordingly: it is part of
    what a reused table must match.
    """
    ratios = sorted({round(float(r), 4) for r in ratios})
    if not ratios or ratios[0] <= 0.0 or ratios[-1] >= 1.0:
        raise PruningError(f"sensitivity ratios must lie in (0, 1), got {ratios}")
    wanted = set(groups) if groups is not None else None
    selected = [g for g in group_set.prunable() if wanted is None or g.name in wanted]
    for group in selected:
        table.sizes[group.name] = group.size
    working = copy.deepcopy(model)
    buffers = {name: buffer.detach().clone() for name, buffer in working.named_buffers()}

    def measure() -> float:
        if after_mask is None:
            return evaluate_batches(working, batches, table.metric)
        try:
            after_mask(working)
            return evaluate_batches(working, batches, table.metric)
        finally:
            with torch.no_grad():
                for name, buffer in working.named_buffers():
                    buffer.copy_(buffers[name])

    if table.base_metric is None:
        table.base_metric = measure()
        if path is not None:
            table.save(path)
    todo = [(g, [r for r in ratios if not table.has(g.name, r)]) for g in selected]
    total = len(selected) * len(ratios)
    remaining = sum(len(r) for _, r in todo)
    bar = tqdm(
        total=total,
        initial=total - remaining,
        desc="sensitivity",
        unit="try",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )
    with bar:
        for group, missing in todo:
            if not missing:
                continue
            bar.set_postfix_str(group.name, refresh=False)
            order = np.argsort(scores[group.index], kind="stable")
            masker = _GroupMasker(working, group_set, group)
            try:
                for ratio in missing:
                    count = min(group.size - 1, int(round(group.size * ratio)))
                    masker.remove(order[:count])
                    entry = table.record(group.name, ratio, measure())
                    if path is not None:
                        table.save(path)
                    bar.update(1)
                    if on_result is not None:
                        on_result(group.name, ratio, entry)
            finally:
                masker.restore()
    return table


def shard_groups(group_set: GroupSet, shard: tuple[int, int] | None) -> list[str] | None:
    """Names of the prunable groups in shard ``(k, n)`` (1-based k): every n-th group from the k-th."""
    if shard is None:
        return None
    k, n = shard
    if not 1 <= k <= n:
        raise PruningError(f"shard must be K/N with 1 <= K <= N, got {k}/{n}")
    return [g.name for i, g in enumerate(group_set.prunable()) if i % n == k - 1]


# ----------------------------------------------------------------------------- from a table to a plan


class _Curves:
    """Interpolated loss curves of the groups in a table, by group index."""

    def __init__(self, table: SensitivityTable, group_set: GroupSet, sizes: dict[int, int]) -> None:
        self.curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for index in sizes:
            name = group_set.groups[index].name
            if table.groups.get(name):
                self.curves[index] = table.curve(name)

    def loss(self, group: int, ratio: float) -> float:
        """Predicted loss at ``ratio`` (linear between scanned points, steeper-than-last beyond them)."""
        if group not in self.curves:
            return 0.0 if ratio <= 0 else math.inf
        ratios, losses = self.curves[group]
        if ratio <= ratios[-1]:
            return float(np.interp(ratio, ratios, losses))
        return math.inf  # never scanned: never chosen

    def max_ratio(self, group: int) -> float:
        return float(self.curves[group][0][-1]) if group in self.curves else 0.0

    def ratio_at(self, group: int, level: float) -> float:
        """The largest ratio whose predicted loss is at most ``level``.

        A tiny slope (``FLAT_SLOPE`` per unit ratio) makes flat stretches strictly
        increasing, so that groups whose losses are all zero share a level evenly
        instead of all jumping to their largest ratio at once.
        """
        if group not in self.curves:
            return 0.0
        ratios, losses = self.curves[group]
        losses = losses + FLAT_SLOPE * ratios
        above = np.nonzero(losses > level)[0]
        if not len(above):
            return float(ratios[-1])
        j = int(above[0])  # losses[j-1] <= level < losses[j]; j >= 1 since losses[0] = 0 <= level
        share = (level - losses[j - 1]) / (losses[j] - losses[j - 1])
        return float(ratios[j - 1] + share * (ratios[j] - ratios[j - 1]))

    def levels(self) -> np.ndarray:
        values = [losses + FLAT_SLOPE * ratios for ratios, losses in self.curves.values()]
        return np.unique(np.concatenate(values)) if values else np.zeros(1)


@dataclass
class SensitivePlan:
    plan: Plan
    ratios: dict[str, float]  # group name -> fraction of its units removed
    predicted_loss: dict[str, float]  # group name -> predicted relative loss
    level: float  # allowed loss ("level") or the last marginal loss per removed MAC ("marginal")


ALLOCATIONS = ("marginal", "level")


def plan_from_sensitivities(
    table: SensitivityTable,
    group_set: GroupSet,
    scores: dict[int, np.ndarray],
    target: float,
    *,
    round_to: int = 8,
    tolerance: float = 0.015,
    allocation: str = "marginal",
) -> SensitivePlan:
    """Per-group keep counts that remove ``target`` of the MACs (within ``tolerance``) with least predicted loss.

    ``allocation``:

    - ``"marginal"`` (default): starting from the whole model, repeatedly remove one
      ``round_to`` step from the group whose predicted loss grows least per MAC
      removed, until the target is reached: the least *total* predicted loss for
      the MACs (a layer whose channels are cheap in MACs must be much less
      sensitive to be worth pruning).
    - ``"level"``: the seed's rule: bisect one allowed-loss level; every group
      loses the largest ratio whose predicted loss stays under it (equal loss
      per group, whatever each group's MACs).

    On the Fashion-MNIST benchmark (``benchmarks/smart_pruning.py``) the marginal
    rule kept 63-64% top-1 at -50% MACs where the level rule kept 55-57% and
    uniform pruning 59-60%. Either way single groups are then nudged by one step
    (least predicted loss per MAC first) to land within ``tolerance``. Groups
    absent from the table keep every channel; no group is pruned beyond the
    largest ratio scanned.
    """
    if not 0.0 < target < 1.0:
        raise PruningError(f"FLOPs target must be in (0, 1), got {target}")
    if allocation not in ALLOCATIONS:
        raise PruningError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    order = {g: np.argsort(s, kind="stable") for g, s in scores.items()}
    builder = PlanBuilder(group_set, order, round_to)
    curves = _Curves(table, group_set, builder.sizes)
    if not curves.curves:
        raise PruningError(
            "the sensitivity table holds no group of this model: nothing to choose ratios from"
        )

    def keep_for(group: int, ratio: float) -> int:
        size = builder.sizes[group]
        keep = builder.aligned(group, size * (1.0 - ratio))
        while keep < size and 1.0 - keep / size > curves.max_ratio(group) + 1e-9:
            keep = min(size, keep + builder.round_to)  # rounding went past the scanned range
        return keep

    def plan_at(level: float) -> Plan:
        return builder.build({g: keep_for(g, curves.ratio_at(g, level)) for g in builder.sizes})

    highest = plan_at(float(curves.levels()[-1]) + 1.0)
    if highest.reduction < target - tolerance:
        raise PruningError(
            f"FLOPs target {target:.2%} is unreachable from the sensitivity table: pruning every scanned group "
            f"to its largest scanned ratio removes only {highest.reduction:.2%} of MACs"
        )
    if allocation == "marginal":
        best, best_level = _greedy_by_marginal_loss(builder, curves, target)
    else:
        low, high = 0.0, float(curves.levels()[-1]) + 1.0
        best, best_level = plan_at(0.0), 0.0
        for _ in range(60):
            middle = (low + high) / 2
            plan = plan_at(middle)
            if abs(plan.reduction - target) < abs(best.reduction - target):
                best, best_level = plan, middle
            if plan.reduction < target:
                low = middle
            else:
                high = middle
    plan = _nudge_by_loss(builder, curves, best, target, tolerance)
    if abs(plan.reduction - target) > tolerance:
        raise PruningError(
            f"could not land within {tolerance:.1%} of the FLOPs target {target:.2%} "
            f"(closest: {plan.reduction:.2%}); try a smaller round_to or more scanned ratios"
        )
    ratios = {group_set.groups[g].name: 1.0 - k / builder.sizes[g] for g, k in plan.keep.items()}
    predicted = {
        group_set.groups[g].name: curves.loss(g, 1.0 - k / builder.sizes[g]) for g, k in plan.keep.items()
    }
    return SensitivePlan(plan, ratios, predicted, best_level)


def _step_down(builder: PlanBuilder, group: int, kept: int) -> int | None:
    """The next smaller allowed keep count of ``group`` (multiples of round_to), or None at the minimum."""
    step = builder.round_to
    count = (kept - 1) // step * step
    return count if count >= step else None


def _greedy_by_marginal_loss(builder: PlanBuilder, curves: _Curves, target: float) -> tuple[Plan, float]:
    """Remove one step at a time from the group with the least predicted loss per removed MAC.

    Ties (flat stretches cost nothing) go to the group that keeps the smaller ratio after the step, so free
    pruning is spread evenly rather than emptying one group first.
    """
    keep = dict(builder.sizes)
    plan = builder.build(keep)
    cost = 0.0
    while plan.reduction < target:
        best: tuple[float, float, int, int, Plan] | None = None
        for group, kept in keep.items():
            count = _step_down(builder, group, kept)
            size = builder.sizes[group]
            if count is None or 1.0 - count / size > curves.max_ratio(group) + 1e-9:
                continue
            candidate = builder.build({**keep, group: count})
            removed = plan.macs_after - candidate.macs_after
            if removed <= 0:
                continue
            added = curves.loss(group, 1.0 - count / size) - curves.loss(group, 1.0 - kept / size)
            key = (added / removed, 1.0 - count / size)
            if best is None or key < best[:2]:
                best = (*key, group, count, candidate)
        if best is None:
            break
        cost, _, group, count, plan = best
        keep[group] = count
    return plan, cost


def _nudge_by_loss(
    builder: PlanBuilder, curves: _Curves, plan: Plan, target: float, tolerance: float
) -> Plan:
    """Move one group one ``round_to`` step at a time towards the target, least predicted loss per MAC first.

    Ties go to the move that leaves the ratios most even (the smaller ratio after a removal, the larger
    ratio before a give-back).
    """
    for _ in range(500):
        error = plan.reduction - target
        if abs(error) <= tolerance / 4:
            break
        remove = error < 0
        best: tuple[float, float, Plan] | None = None
        for group, kept in plan.keep.items():
            size = builder.sizes[group]
            count = _step_down(builder, group, kept) if remove else _step_up(builder, group, kept)
            if count is None:
                continue
            new_ratio = 1.0 - count / size
            if remove and new_ratio > curves.max_ratio(group) + 1e-9:
                continue
            candidate = builder.build({**plan.keep, group: count})
            if abs(candidate.reduction - target) >= abs(error):
                continue
            moved = abs(candidate.macs_after - plan.macs_after) or 1
            # predicted loss added per MAC removed, or (negative) loss saved per MAC given back
            cost = (curves.loss(group, new_ratio) - curves.loss(group, 1.0 - kept / size)) / moved
            key = (cost, new_ratio if remove else -(1.0 - kept / size))
            if best is None or key < best[:2]:
                best = (*key, candidate)
        if best is None:
            break
        plan = best[2]
    return plan


def _step_up(builder: PlanBuilder, group: int, kept: int) -> int | None:
    """The next larger allowed keep count of ``group``, or None when it keeps everything."""
    size = builder.sizes[group]
    if kept >= size:
        return None
    return min(size, (kept // builder.round_to + 1) * builder.round_to)


def predicted_total_loss(plan: SensitivePlan) -> float:
    return float(sum(v for v in plan.predicted_loss.values() if math.isfinite(v)))


def table_rows(table: SensitivityTable, limit: int | None = None) -> list[list[str]]:
    """Rows (group, size, loss in % at each ratio) for a text table."""
    ratio_keys = sorted({k for r in table.groups.values() for k in r}, key=float)
    rows = []
    for name, results in islice(table.groups.items(), limit):
        cells = [f"{100 * results[k]['loss']:.1f}" if k in results else "-" for k in ratio_keys]
        rows.append([name, str(table.sizes.get(name, "?")), *cells])
    return rows
