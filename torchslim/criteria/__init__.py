"""Importance criteria: one score per channel unit of a group; the lowest-scored units go first.

A coupled group's score sums its members' scores, each member's scores divided
by their mean first, so a wide layer does not drown a narrow one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from torchslim.graph import Group, GroupInput, GroupSet, layer_weight
from torchslim.registry import Registry

from .data_driven import DATA_CRITERIA, DataCriterion
from .data_driven import data_criterion as data_criterion
from .data_driven import prepare_data_criterion as prepare_data_criterion

# A criterion maps one member layer's weight (output channels first) to one score per channel;
# a DataCriterion (taylor, activation_mean) scores from batches fed by prepare_data_criterion.
WeightScore = Callable[[torch.Tensor], np.ndarray]
CRITERIA: Registry[WeightScore | DataCriterion] = Registry("criterion")
# The criterion used when none is named: by `torchslim.prune`, `torchslim prune`, `torchslim sensitivity`,
# a pruner config without `criterions` and the demo. benchmarks/p1_like_for_like.py chose it on its
# validation split (the README says why).
DEFAULT_CRITERION = "l1_norm"
for _data_criterion in DATA_CRITERIA:
    CRITERIA.register(_data_criterion.name, _data_criterion)


@CRITERIA.register("l1_norm")
def l1_norm(weight: torch.Tensor) -> np.ndarray:
    """Sum of absolute weights of each filter (the seed's criterion)."""
    return torch.linalg.vector_norm(weight.detach().flatten(1), ord=1, dim=1).cpu().double().numpy()


@CRITERIA.register("l2_norm")
def l2_norm(weight: torch.Tensor) -> np.ndarray:
    return weight.detach().flatten(1).norm(dim=1).cpu().double().numpy()


@CRITERIA.register("fpgm", aliases=("geometry_median",))
def fpgm(weight: torch.Tensor) -> np.ndarray:
    """Filter pruning via geometric median: filters close to all others are redundant (low score)."""
    flat = weight.detach().flatten(1).double()
    return torch.cdist(flat, flat).sum(1).cpu().numpy()


@CRITERIA.register("bn_scale")
def bn_scale(weight: torch.Tensor) -> np.ndarray:
    """|gamma| of a batch norm: applied to the group's batch norms (see :func:`score_group`)."""
    return weight.detach().abs().double().cpu().numpy()


@CRITERIA.register("l1_group", aliases=("group_l1",))
def l1_group(weight: torch.Tensor) -> np.ndarray:
    """L1 of every weight a channel owns: filters, batch-norm scale, depthwise filter and the
    consumers' input slices (see :func:`score_group`), as Torch-Pruning's group magnitude does."""
    weight = weight.detach()
    return weight.reshape(weight.shape[0], -1).abs().sum(1).cpu().double().numpy()


def list_criteria() -> list[str]:
    return CRITERIA.list()


def score_group(group_set: GroupSet, group: Group, model: nn.Module, criterion: str) -> np.ndarray:
    """One score per unit of ``group``; higher means more important.

    ``bn_scale`` reads the group's batch norms; a group without one falls back to
    ``l1_norm`` of its layers' filters. Aliases and any letter case name the same criterion.
    """
    criterion = CRITERIA.canonical(criterion)
    score_fn = CRITERIA.get(criterion)
    if isinstance(score_fn, DataCriterion):
        return score_fn.score_group(group_set, group, model)
    if criterion == "bn_scale" and not group.members.get("norm"):
        score_fn = l1_norm
    modules = dict(model.named_modules())
    scores = np.zeros(group.size)
    for name, positions, units, along_inputs in _scored_members(group_set, group, criterion):
        weight = layer_weight(modules[name])
        if weight is None:
            continue
        if along_inputs:  # a consumer's input channels: its weight's axis 1
            weight = weight.transpose(0, 1)
        member_scores = score_fn(weight)[positions]
        mean = member_scores.mean() if len(member_scores) else 0.0
        np.add.at(scores, units, member_scores / mean if mean > 0 else member_scores)
    return scores


Member = tuple[str, np.ndarray, np.ndarray, bool]  # layer, positions, units, whether along its inputs


def _scored_members(group_set: GroupSet, group: Group, criterion: str) -> list[Member]:
    """The layers whose weights ``criterion`` reads for ``group``, with the positions of its channels."""
    uses = {u.module: u for u in group_set.graph.uses}

    def member(name: str, ids: np.ndarray) -> Member:
        return (name, *group_set.positions(ids, group), False)

    if criterion == "bn_scale" and group.members.get("norm"):
        members = [member(name, uses[name].in_ids) for name in group.members["norm"]]
    else:
        members = [member(name, uses[name].out_ids) for name in group.sources]
    if criterion == "l1_group":  # also what the channel feeds and what normalises it
        roles = ("depthwise", "norm")
        members += [member(name, uses[name].in_ids) for role in roles for name in group.members.get(role, [])]
        consumers: dict[str, GroupInput] = {}
        for consumer in group_set.consumers(group):
            consumers.setdefault(consumer.module, consumer)  # a layer called twice reads the same channels
        members += [(c.module, c.positions, c.units, True) for c in consumers.values()]
    return members
