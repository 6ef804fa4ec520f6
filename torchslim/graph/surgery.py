"""Surgery: physically remove channels, and count the MACs of a plan on shapes alone.

A plan is a boolean mask over channel roots (True = removed). Every recorded
layer use turns the mask into the positions it keeps along its axes. Optimizer
state is not sliced: the compressor builds a fresh optimizer after pruning.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .channel_graph import DENSE_ROLES, LayerUse
from .groups import GroupSet


def removed_mask(group_set: GroupSet, removed_units: dict[int, np.ndarray]) -> np.ndarray:
    """Mask over root ids from {group index: unit indices to remove}."""
    mask = np.zeros(len(group_set.roots), dtype=bool)
    for group_index, units in removed_units.items():
        mask[group_set.groups[group_index].units[np.asarray(units, dtype=np.int64)]] = True
    return mask


def plan_macs(group_set: GroupSet, mask: np.ndarray) -> int:
    """MACs of the model after removing ``mask``'s channels, from shapes only."""
    return sum(use_macs(group_set, use, mask) for use in group_set.graph.uses if use.inference)


def use_macs(group_set: GroupSet, use: LayerUse, mask: np.ndarray) -> int:
    if use.role in DENSE_ROLES:
        out_count = int(group_set.kept(use.out_ids, mask).sum())
        if use.in_ids is None:
            return use.base_macs * out_count // max(len(use.out_ids), 1)
        in_count = int(group_set.kept(use.in_ids, mask).sum())
        return use.macs_factor * in_count * out_count
    if use.role == "depthwise":
        return use.macs_factor * int(group_set.kept(use.in_ids, mask).sum())
    return use.base_macs


def apply_plan(model: nn.Module, group_set: GroupSet, mask: np.ndarray) -> nn.Module:
    """Remove the masked channels from ``model`` in place and return it."""
    modules = dict(model.named_modules())
    done: set[tuple[str, str]] = set()
    for use in group_set.graph.uses:
        module = modules[use.module]
        if use.role in DENSE_ROLES and (use.module, "out") not in done:
            _slice_weight(module, _index(group_set.kept(use.out_ids, mask)), axis=0)
            done.add((use.module, "out"))
        if use.in_ids is None or (use.module, "in") in done:
            continue
        keep = _index(group_set.kept(use.in_ids, mask))
        if use.role in DENSE_ROLES:
            _slice_weight(module, keep, axis=1)
        elif use.role == "depthwise":
            _slice_weight(module, keep, axis=0)
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


def _slice_weight(module: nn.Module, keep: torch.Tensor, axis: int) -> None:
    """Keep the ``keep`` output channels (``axis`` 0, with the bias) or input channels (``axis`` 1)."""
    keep = keep.to(module.weight.device)
    if axis == 0:  # per-output-channel tensors of a layer subclass go too (ScaledStdConv2d's gain)
        for name, tensor in _per_output_tensors(module):
            _replace(module, name, tensor.data.index_select(0, keep))
    _replace(module, "weight", module.weight.data.index_select(axis, keep))
    if axis == 0 and getattr(module, "bias", None) is not None:
        _replace(module, "bias", module.bias.data.index_select(0, keep))
    side = "out" if axis == 0 else "in"
    setattr(module, f"{side}_features" if isinstance(module, nn.Linear) else f"{side}_channels", len(keep))


def _per_output_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """A layer's own tensors other than weight and bias whose first axis is its output channels."""
    count = module.weight.shape[0]
    tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
    return [
        (name, t)
        for name, t in tensors
        if name not in ("weight", "bias") and t is not None and t.dim() >= 1 and t.shape[0] == count
    ]


def _slice_norm(module: nn.Module, keep: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        tensor = getattr(module, name, None)
        if tensor is not None:
            _replace(module, name, tensor.data.index_select(0, keep.to(tensor.device)))
    module.num_features = len(keep)
