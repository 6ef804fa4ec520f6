"""Scanning sensitivities: mask one group at a time on a working copy and measure."""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from torchslim.criteria import data_criterion, prepare_data_criterion, score_group
from torchslim.engine.cached import Batch, evaluate_batches
from torchslim.errors import PruningError
from torchslim.graph import Group, GroupSet, layer_weight
from torchslim.sensitivity.table import DEFAULT_RATIOS, SensitivityTable


def slice_samples(dataset_size: int, eval_rate: float | None = None, limit: int | None = None) -> int:
    """How many validation samples a scan uses: ``eval_rate`` of them, at most ``limit``, at least one."""
    count = dataset_size if eval_rate is None else int(math.ceil(eval_rate * dataset_size))
    if limit is not None:
        count = min(count, limit)
    return max(1, min(count, dataset_size))


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


AfterMask = Callable[[nn.Module], Any]
OnResult = Callable[[str, float, dict[str, float]], None]


class GroupMasker:
    """Zeroes the consumer inputs of one group's units on a working copy, and puts them back."""

    def __init__(self, model: nn.Module, group_set: GroupSet, group: Group) -> None:
        modules = dict(model.named_modules())
        self.targets: list[tuple[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor]] = []
        for consumer in group_set.consumers(group):
            weight = layer_weight(modules[consumer.module])
            index = torch.from_numpy(consumer.positions).to(weight.device)
            original = weight.detach().index_select(1, index).clone()
            self.targets.append((weight, index, consumer.units, original))

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


class _WorkingCopy:
    """The copy of the model a scan masks; each measurement leaves its buffers as they were."""

    def __init__(
        self, model: nn.Module, batches: Sequence[Batch], metric: str, after_mask: AfterMask | None
    ) -> None:
        self.model = copy.deepcopy(model)
        self.batches, self.metric, self.after_mask = batches, metric, after_mask
        self.buffers = {name: buffer.detach().clone() for name, buffer in self.model.named_buffers()}

    def measure(self) -> float:
        if self.after_mask is None:
            return evaluate_batches(self.model, self.batches, self.metric)
        try:
            self.after_mask(self.model)
            return evaluate_batches(self.model, self.batches, self.metric)
        finally:
            with torch.no_grad():
                for name, buffer in self.model.named_buffers():
                    buffer.copy_(self.buffers[name])


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
    on_result: OnResult | None = None,
    after_mask: AfterMask | None = None,
) -> SensitivityTable:
    """Fill ``table`` with every missing (prunable group, ratio) and return it; ``model`` is not changed.

    ``groups`` restricts the scan to those group names (a shard). With ``path`` the table is
    written after the base metric and after every evaluation, atomically, so a killed scan
    loses at most the evaluation in flight. ``on_result(group, ratio, entry)`` is called after
    each evaluation. ``after_mask(model)`` runs on the masked copy before each measurement
    (e.g. batch-norm re-estimation), so sensitivities are measured the way the pruned model
    will be used; set ``table.recalibrated`` to match, as a reused table must.
    """
    ratios = _checked_ratios(ratios)
    wanted = set(groups) if groups is not None else None
    selected = [g for g in group_set.prunable() if wanted is None or g.name in wanted]
    for group in selected:
        table.sizes[group.name] = group.size
    working = _WorkingCopy(model, batches, table.metric, after_mask)
    if table.base_metric is None:
        table.base_metric = working.measure()
        _save(table, path)
    todo = [(g, [r for r in ratios if not table.has(g.name, r)]) for g in selected]
    total = len(selected) * len(ratios)
    with _progress_bar(total, total - sum(len(missing) for _, missing in todo), progress) as bar:
        for group, missing in todo:
            if not missing:
                continue
            bar.set_postfix_str(group.name, refresh=False)
            order = np.argsort(scores[group.index], kind="stable")
            masker = GroupMasker(working.model, group_set, group)
            try:
                for ratio in missing:
                    masker.remove(order[: min(group.size - 1, int(round(group.size * ratio)))])
                    entry = table.record(group.name, ratio, working.measure())
                    _save(table, path)
                    bar.update(1)
                    if on_result is not None:
                        on_result(group.name, ratio, entry)
            finally:
                masker.restore()
    return table


def _checked_ratios(ratios: Sequence[float]) -> list[float]:
    ratios = sorted({round(float(r), 4) for r in ratios})
    if not ratios or ratios[0] <= 0.0 or ratios[-1] >= 1.0:
        raise PruningError(f"sensitivity ratios must lie in (0, 1), got {ratios}")
    return ratios


def _save(table: SensitivityTable, path: str | Path | None) -> None:
    if path is not None:
        table.save(path)


def _progress_bar(total: int, done: int, enabled: bool) -> tqdm:
    return tqdm(
        total=total,
        initial=done,
        desc="sensitivity",
        unit="try",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


def shard_groups(group_set: GroupSet, shard: tuple[int, int] | None) -> list[str] | None:
    """Names of the prunable groups in shard ``(k, n)`` (1-based k): every n-th group from the k-th."""
    if shard is None:
        return None
    k, n = shard
    if not 1 <= k <= n:
        raise PruningError(f"shard must be K/N with 1 <= K <= N, got {k}/{n}")
    return [g.name for i, g in enumerate(group_set.prunable()) if i % n == k - 1]
