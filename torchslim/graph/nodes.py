"""Reading an fx node: its output shape(s), the module that ran it, literal sizes and index items."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.fx as fx
from torch import nn

from .labels import compress


def inside(node: fx.Node) -> str:
    """ " in <module> (<type>)": the module whose forward ran the op, for a function or method node."""
    stack = node.meta.get("nn_module_stack") if node.op in ("call_function", "call_method") else None
    if not stack:
        return ""
    path, kind = list(stack.values())[-1]
    return f" in {path} ({getattr(kind, '__name__', kind)})"


def input_width(module: nn.Module) -> int:
    for name in ("in_channels", "in_features", "embed_dim"):
        if hasattr(module, name):
            return int(getattr(module, name))
    raise TypeError(f"no input width on {type(module).__name__}")


def flatten(values: Any) -> list:
    out = []
    for v in values:
        out.extend(flatten(v) if isinstance(v, (list, tuple)) else [v])
    return out


def shapes(node: Any) -> Any:
    """The shape of a node's output, a list of shapes for tuple outputs, or None."""
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    if meta is None:
        return None
    if hasattr(meta, "shape"):  # TensorMetadata is itself a named tuple
        return tuple(meta.shape)
    if isinstance(meta, (list, tuple)):
        return [tuple(m.shape) if hasattr(m, "shape") else None for m in meta]
    return tuple(meta.shape)


def plain(index: tuple) -> list:
    """Index items that consume an axis (no None), with Ellipsis expanded no further."""
    return [i for i in index if i is not None and i is not Ellipsis]


def cuts(full: np.ndarray, axis: int, item: Any) -> bool:
    """Whether indexing ``axis`` with ``item`` drops some of the channel labels along it."""
    if axis >= full.ndim:
        return False
    compressed = compress(full)
    if compressed.size <= 1 or compressed.shape[axis] == 1:
        return False
    if isinstance(item, slice):
        return not keeps_whole_axis(item, full.shape[axis])
    return True


def keeps_whole_axis(item: slice, size: int) -> bool:
    """``x[:, :n]`` with ``n`` at least the axis size keeps every channel, and still does after pruning
    (the axis only shrinks; slicing clamps), e.g. GhostNet's ``out[:, : self.out_chs]``."""
    stop_ok = item.stop is None or (isinstance(item.stop, int) and item.stop >= size)
    return item.start in (None, 0) and item.step in (None, 1) and stop_ok
