"""Surgery: physically remove channels, and count the MACs of a plan on shapes alone.

A plan is a boolean mask over channel roots (True = removed). Every recorded
layer use turns the mask into the positions it keeps along its axes. Optimizer
state is not sliced: the compressor builds a fresh optimizer after pruning.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from torchslim.nn.attention import uses_pruned_forward

from .channel_graph import CONSUMER_ROLES, DENSE_ROLES, NODE_ROLES, LayerUse
from .groups import GroupSet
from .joins import set_widths


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
    if use.role in CONSUMER_ROLES:
        out_count = int(group_set.kept(use.out_ids, mask).sum())
        if use.in_ids is None:
            return use.base_macs * out_count // max(len(use.out_ids), 1)
        in_count = int(group_set.kept(use.in_ids, mask).sum())
        return use.macs_factor * in_count * out_count
    if use.role in ("depthwise", "product") and use.in_ids is not None:
        return use.macs_factor * int(group_set.kept(use.in_ids, mask).sum())
    return use.base_macs


def apply_plan(model: nn.Module, group_set: GroupSet, mask: np.ndarray) -> nn.Module:
    """Remove the masked channels from ``model`` in place and return it."""
    modules = dict(model.named_modules())
    done: set[tuple[str, str]] = set()
    for use in group_set.graph.uses:
        if use.role in NODE_ROLES:
            continue
        module = modules[use.module]
        if use.role == "attention":
            if use.module not in done:
                _slice_attention(module, group_set, use, mask)
                done.add(use.module)
            continue
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
        elif use.role == "layer_norm":
            _slice_layer_norm(module, keep)
        done.add((use.module, "in"))
    _slice_tensors(model, group_set, mask)
    set_widths(model, group_set.graph.widths, lambda ids: group_set.kept(ids, mask).sum())
    for width in group_set.graph.widths:  # window attention whose widths may now differ
        if width.attribute in ("num_heads", "n_heads"):
            uses_pruned_forward(modules[width.module])
    return model


def _slice_tensors(model: nn.Module, group_set: GroupSet, mask: np.ndarray) -> None:
    """Slice the model tensors joined to channels (class token, position embedding, layer scale)."""
    modules = dict(model.named_modules())
    for joined in group_set.graph.tensor_slices:
        path, _, name = joined.target.rpartition(".")
        module = modules[path]
        tensor = getattr(module, name)
        keep = _index(group_set.kept(joined.ids, mask)).to(tensor.device)
        _replace(module, name, tensor.data.index_select(joined.axis, keep))


def _slice_layer_norm(module: nn.LayerNorm, keep: torch.Tensor) -> None:
    for name in ("weight", "bias"):
        tensor = getattr(module, name, None)
        if tensor is not None:
            _replace(module, name, tensor.data.index_select(0, keep.to(tensor.device)))
    module.normalized_shape = (len(keep),)


def _slice_attention(module: nn.MultiheadAttention, group_set: GroupSet, use: LayerUse, mask) -> None:
    """Keep the attention layer's kept heads (rows of in_proj) and input channels (its columns), and
    give it the forward that reads its widths from its weights."""
    kept_rows = group_set.kept(use.out_ids, mask)
    kept_columns = group_set.kept(use.in_ids, mask) if use.in_ids is not None else None
    if kept_rows.all() and (kept_columns is None or kept_columns.all()):
        return
    rows = _index(kept_rows).to(module.in_proj_weight.device)
    weight = module.in_proj_weight.data.index_select(0, rows)
    if kept_columns is not None:
        weight = weight.index_select(1, _index(kept_columns).to(weight.device))
    _replace(module, "in_proj_weight", weight)
    if module.in_proj_bias is not None:
        _replace(module, "in_proj_bias", module.in_proj_bias.data.index_select(0, rows))
    module.num_heads = len(rows) // (3 * module.head_dim)
    module.embed_dim = module.kdim = module.vdim = weight.shape[1]
    uses_pruned_forward(module)


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
