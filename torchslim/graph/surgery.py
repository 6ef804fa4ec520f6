"""Surgery: physically remove channels, count MACs of a plan on shapes alone, and the correctness oracle.

A plan is a boolean mask over channel roots (True = removed). Every recorded
layer use turns the mask into the positions it keeps along its axes. Optimizer
state is not sliced: the compressor builds a fresh optimizer after pruning.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .groups import GroupSet
from .trace import LayerUse


def removed_mask(group_set: GroupSet, removed_units: dict[int, np.ndarray]) -> np.ndarray:
    """Mask over root ids from {group index: unit indices to remove}."""
    mask = np.zeros(len(group_set.roots), dtype=bool)
    for group_index, units in removed_units.items():
        mask[group_set.groups[group_index].units[np.asarray(units, dtype=np.int64)]] = True
    return mask


def _kept(group_set: GroupSet, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return ~mask[group_set.roots[ids]]


def plan_macs(group_set: GroupSet, mask: np.ndarray) -> int:
    """MACs of the model after removing ``mask``'s channels, from shapes only."""
    return sum(use_macs(group_set, use, mask) for use in group_set.graph.uses if use.inference)


def use_macs(group_set: GroupSet, use: LayerUse, mask: np.ndarray) -> int:
    if use.role in ("conv", "linear"):
        out_count = int(_kept(group_set, use.out_ids, mask).sum())
        if use.in_ids is None:
            return use.base_macs * out_count // max(len(use.out_ids), 1)
        in_count = int(_kept(group_set, use.in_ids, mask).sum())
        return use.macs_factor * in_count * out_count
    if use.role == "depthwise":
        return use.macs_factor * int(_kept(group_set, use.in_ids, mask).sum())
    return use.base_macs


def apply_plan(model: nn.Module, group_set: GroupSet, mask: np.ndarray) -> nn.Module:
    """Remove the masked channels from ``model`` in place and return it."""
    modules = dict(model.named_modules())
    done: set[tuple[str, str]] = set()
    for use in group_set.graph.uses:
        module = modules[use.module]
        if use.role in ("conv", "linear") and (use.module, "out") not in done:
            _slice_out(module, _index(_kept(group_set, use.out_ids, mask)))
            done.add((use.module, "out"))
        if use.in_ids is None or (use.module, "in") in done:
            continue
        keep = _index(_kept(group_set, use.in_ids, mask))
        if use.role in ("conv", "linear"):
            _slice_in(module, keep)
        elif use.role == "depthwise":
            _slice_out(module, keep)
            module.in_channels = module.groups = len(keep)
        elif use.role == "norm":
            _slice_norm(module, keep)
        done.add((use.module, "in"))
    return model


def _index(keep: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.nonzero(keep)[0])


def _replace(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(tensor.contiguous(), requires_grad=old.requires_grad))
    else:
        module._buffers[name] = tensor.contiguous()


def _slice_out(module: nn.Module, keep: torch.Tensor) -> None:
    keep = keep.to(module.weight.device)
    _replace(module, "weight", module.weight.data.index_select(0, keep))
    if getattr(module, "bias", None) is not None:
        _replace(module, "bias", module.bias.data.index_select(0, keep))
    if isinstance(module, nn.Linear):
        module.out_features = len(keep)
    else:
        module.out_channels = len(keep)


def _slice_in(module: nn.Module, keep: torch.Tensor) -> None:
    keep = keep.to(module.weight.device)
    _replace(module, "weight", module.weight.data.index_select(1, keep))
    if isinstance(module, nn.Linear):
        module.in_features = len(keep)
    else:
        module.in_channels = len(keep)


def _slice_norm(module: nn.Module, keep: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        tensor = getattr(module, name, None)
        if tensor is not None:
            _replace(module, name, tensor.data.index_select(0, keep.to(tensor.device)))
    module.num_features = len(keep)


@torch.no_grad()
def oracle_reference(model: nn.Module, group_set: GroupSet, mask: np.ndarray) -> nn.Module:
    """A copy of the unpruned model whose consumers ignore the removed channels.

    Zeroing the input weights of every conv/linear at removed positions is the
    unpruned model's view of "these channels are gone"; the pruned model must
    compute the same function.
    """
    reference = copy.deepcopy(model)
    modules = dict(reference.named_modules())
    for use in group_set.graph.uses:
        if use.role in ("conv", "linear") and use.in_ids is not None:
            drop = torch.from_numpy(np.nonzero(~_kept(group_set, use.in_ids, mask))[0])
            modules[use.module].weight.index_fill_(1, drop.to(modules[use.module].weight.device), 0.0)
    return reference
