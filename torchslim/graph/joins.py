"""Tensors and attributes joined to channels: a class token, position embeddings, layer scales, a
model's width attribute. They are sliced (set) with the channels they meet, instead of blocking them.

A parameter read with ``get_attr`` that meets a traced tensor (added, multiplied, concatenated) is
aligned to it right to left, as broadcasting does; the parameter's one axis along which the
tensor's channels vary gets its own channel ids, joined with the tensor's. A reshape whose literal
size is a width attribute the model's forward reads (torchvision ViT's ``hidden_dim``) follows the
channels, and surgery sets the attribute to the kept count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.fx as fx
from torch import nn

from . import ops
from .channel_graph import TensorSlice, WidthAttribute

ChannelTracer = Any  # a torchslim.graph.tracer.ChannelTracer (which imports this module)


@dataclass(frozen=True)
class ParamValue:
    """What a get_attr node holds: a model tensor, by qualified name and shape."""

    target: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


def param_value(tracer: ChannelTracer, node: fx.Node) -> ParamValue:
    meta = node.meta.get("tensor_meta")
    shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()
    return ParamValue(str(node.target), shape)


def join_param(tracer: ChannelTracer, param: ParamValue, labels: np.ndarray, ndim: int) -> Any:
    """The channel labels of ``param`` where it meets ``labels`` (a tensor of ``ndim`` dims); None
    when the tensor's channels do not vary along any of its axes; a string (the reason) when the
    parameter cannot follow them."""
    offset = ndim - len(param.shape)
    if offset < 0:
        return f"tensor {param.target} has more axes than the channels it meets"
    channel_axes = []
    for axis, size in enumerate(param.shape):
        out_axis = offset + axis
        if size == 1:
            continue
        if out_axis == 0:
            return f"tensor {param.target} varies along the batch axis"
        if labels.shape[out_axis - 1] > 1:
            channel_axes.append(axis)
    if not channel_axes:
        return None
    if len(channel_axes) > 1:
        return f"tensor {param.target} meets channels along more than one axis"
    axis = channel_axes[0]
    ids = _tensor_ids(tracer, param.target, axis, param.shape[axis])
    shaped = ids.reshape([-1 if k == offset + axis - 1 else 1 for k in range(labels.ndim)])
    tracer.ids.union_arrays(shaped, labels)
    return shaped


def _tensor_ids(tracer: ChannelTracer, target: str, axis: int, size: int) -> np.ndarray:
    """The channel ids of one axis of a model tensor: allocated once, recorded for surgery."""
    for known in tracer.graph.tensor_slices:
        if known.target == target and known.axis == axis:
            return known.ids
    ids = tracer.ids.new(size)
    tracer.graph.tensor_slices.append(TensorSlice(target, axis, ids))
    return ids


def owner(node: fx.Node) -> str:
    """The qualified name of the module whose forward ran ``node`` ("" for the model itself)."""
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else ""


def width_attribute(tracer: ChannelTracer, node: fx.Node, literal: int, vector: np.ndarray | None) -> bool:
    """Whether a reshape's literal size is a width attribute of the module running it; if so,
    record it to be set to the kept count of ``vector``'s channels."""
    if vector is None:
        return False
    path = owner(node)
    module = tracer.modules.get(path)
    for kind, names in ops.WIDTH_ATTRIBUTES:
        if not isinstance(module, kind):
            continue
        for name in names:
            if getattr(module, name, None) == literal == len(vector):
                tracer.graph.widths.append(WidthAttribute(path, name, vector))
                return True
    return False


def set_widths(model: nn.Module, graph_widths: list[WidthAttribute], kept_count) -> None:
    """After surgery: every recorded width attribute is the kept count of its channels."""
    modules = dict(model.named_modules())
    for width in graph_widths:
        setattr(modules[width.module], width.attribute, int(kept_count(width.ids)))
