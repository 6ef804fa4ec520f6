"""Following channel labels through an fx graph, op by op.

Each op either creates channels (conv, linear), keeps them (BN, depthwise conv,
activations, pooling), re-arranges them (cat, chunk, reshape, transpose), couples
them (add, mul), or is not understood, in which case every channel reaching it
is blocked with the op named as the reason.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from . import ops
from .attention import attention_tracer
from .channel_graph import DENSE_ROLES, ChannelGraph, LayerUse
from .joins import ParamValue, join_param, param_value
from .labels import ChannelIds, channel_labels, compress, vector_along
from .layer_rules import functional_layer, record_owner, timm_spatial_functions, transformed_weight_conv
from .nodes import cuts, flatten, input_width, inside, plain, shapes
from .sizes import SizeOrigins, guard_sizes, hold_fixed_axes, is_reshape, resolved

Value = Any  # a label array, a list/tuple of values, or None for non-tensors


class ChannelTracer:
    """Walks an fx graph whose nodes carry output shapes and gives every tensor its channel labels."""

    def __init__(self, model: nn.Module, graph_module: fx.GraphModule) -> None:
        self.modules = dict(model.named_modules())
        self.graph_module = graph_module
        self.ids = ChannelIds()
        self.graph = ChannelGraph(self.ids)
        self.env: dict[fx.Node, Value] = {}
        self.first_inputs: dict[str, np.ndarray | None] = {}
        self.sizes = SizeOrigins()  # which tensor axes the ints handed to ops are read from

    # -- helpers ---------------------------------------------------------------------------
    def value(self, arg: Any) -> Value:
        if isinstance(arg, fx.Node):
            return self.env.get(arg)
        if isinstance(arg, (list, tuple)):
            return [self.value(a) for a in arg]
        return None

    def labels_in(self, args: Any) -> list[np.ndarray]:
        found: list[np.ndarray] = []
        for item in args if isinstance(args, (list, tuple)) else [args]:
            value = self.value(item) if isinstance(item, fx.Node) else None
            if isinstance(item, (list, tuple, dict)):
                values = item.values() if isinstance(item, dict) else item
                found.extend(self.labels_in(list(values)))
            elif isinstance(value, np.ndarray):
                found.append(value)
            elif isinstance(value, (list, tuple)):
                found.extend(v for v in flatten(value) if isinstance(v, np.ndarray))
        return found

    def opaque(self, node: fx.Node, reason: str) -> Value:
        """Block every channel reaching ``node`` and give its output fresh, blocked ids."""
        reason += inside(node)
        for labels in self.labels_in(list(node.args) + list(node.kwargs.values())):
            self.ids.block(labels, reason)
        return self.fresh_output(node, reason)

    def fresh_output(self, node: fx.Node, reason: str) -> Value:
        found = shapes(node)
        if found is None:
            return None
        if isinstance(found, list):
            return [self._fresh(s, reason) for s in found]
        return self._fresh(found, reason)

    def _fresh(self, shape: tuple[int, ...] | None, reason: str) -> np.ndarray | None:
        if shape is None or len(shape) < 2:
            return None
        ids = self.ids.new(shape[1])
        self.ids.block(ids, reason)
        return channel_labels(ids, len(shape), 1)

    def source_ids(self, name: str, count: int) -> np.ndarray:
        """Output channel ids of a layer: allocated once, shared by every call of the layer."""
        if name not in self.graph.sources:
            self.graph.sources[name] = self.ids.new(count)
        return self.graph.sources[name]

    # -- dispatch -------------------------------------------------------------------------
    def run(self) -> ChannelGraph:
        for node in self.graph_module.graph.nodes:
            recorded = len(self.graph.uses)
            if not is_reshape(node):  # a reshape's sizes may follow the channels (see reshape)
                guard_sizes(self, node)
            self.env[node] = self.visit(node)
            macs = int(node.meta.get("macs", 0))
            if macs and len(self.graph.uses) == recorded:  # a cost no handler accounted for: fixed
                self.record(LayerUse(node.name, "node", None, None, macs))
            record_owner(self.graph.owners, node)
        return self.graph

    def visit(self, node: fx.Node) -> Value:
        if node.op == "placeholder":
            return self.fresh_output(node, "model input channels")
        if node.op == "output":
            for labels in self.labels_in(list(node.args)):
                self.ids.block(labels, "model output (the classifier's outputs are never pruned)")
            return None
        if node.op == "get_attr":
            return param_value(self, node)
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target])
        if node.op == "call_function":
            return self.visit_function(node, node.target)
        if node.op == "call_method":
            return self.visit_method(node, node.target)
        return self.opaque(node, f"unsupported node {node.op} {node.target}")

    def visit_module(self, node: fx.Node, module: nn.Module, name: str | None = None) -> Value:
        name = name or str(node.target)
        labels = self.value(node.args[0]) if node.args else None
        if isinstance(module, ops.CONV_TYPES):
            return self.conv(node, name, module, labels)
        if isinstance(module, nn.Linear):
            return self.linear(node, name, module, labels)
        trace_attention = attention_tracer(module)
        if trace_attention is not None:
            return trace_attention(self, node, name, module)
        if isinstance(module, nn.LayerNorm):
            return self.layer_norm(node, name, module, labels)
        if isinstance(module, ops.NORM_TYPES):
            return self.norm(node, name, module, labels)
        if isinstance(module, nn.Flatten):
            return self.reshape(node, labels, dynamic=True)
        if isinstance(module, ops.PASS_MODULES) or (
            isinstance(module, nn.PReLU) and module.num_parameters == 1
        ):
            return self.passthrough(node, labels)
        return self.opaque(node, f"unsupported layer {type(module).__name__} ({name})")

    def visit_function(self, node: fx.Node, target: Callable) -> Value:
        if target in ops.PASS_FUNCTIONS or target in timm_spatial_functions():
            return self.passthrough(node, self.value(node.args[0]))
        if target in ops.ELEMENTWISE_FUNCTIONS:
            return self.elementwise(node)
        if target is getattr and len(node.args) > 1 and node.args[1] in ops.NON_TENSOR_ATTRIBUTES:
            return None
        if target in ops.PATCH_MERGING_FUNCTIONS:
            return self.patch_merging(node)
        if target is operator.getitem:
            return self.getitem(node)
        if target in (torch.cat, torch.concat):
            return self.cat(node)
        if target is torch.reshape:
            return self.reshape(node, self.value(node.args[0]), dynamic=False)
        if target is torch.flatten:
            return self.reshape(node, self.value(node.args[0]), dynamic=True)
        if target in ops.AXIS_SWAPS or target is torch.permute:
            return self.permute(node)
        if target in (torch.chunk, torch.split):
            return self.chunk(node, "split" if target is torch.split else "chunk")
        if target is torch.mean or target is torch.sum:
            return self.reduce(node)
        if target in ops.NON_TENSOR_FUNCTIONS or (
            target is getattr and len(node.args) > 1 and node.args[1] in ops.METADATA_ATTRIBUTES
        ):
            return None
        if target in ops.FUNCTIONAL_LAYERS:
            layer = functional_layer(node, target, self.modules)
            if layer is not None:
                return self.visit_module(node, self.modules[layer], name=layer)
            layer = transformed_weight_conv(node, target, self.modules)
            if layer is not None:
                return self.standardised_conv(node, layer)
        return self.opaque(node, f"unsupported op {getattr(target, '__name__', target)} at node {node.name}")

    def visit_method(self, node: fx.Node, method: str) -> Value:
        if method in ops.NON_TENSOR_METHODS:
            return None
        if method in ops.PARAM_KEEPING_METHODS and isinstance(self.value(node.args[0]), ParamValue):
            return self.value(node.args[0])
        if method in ops.PASS_METHODS:
            return self.passthrough(node, self.value(node.args[0]))
        if method in ops.ELEMENTWISE_METHODS:
            return self.elementwise(node)
        if method in ("view", "reshape", "flatten"):
            return self.reshape(node, self.value(node.args[0]), dynamic=method == "flatten")
        if method in ops.AXIS_SWAPS or method == "permute":
            return self.permute(node)
        if method in ("chunk", "split"):
            return self.chunk(node, method)
        if method in ("mean", "sum"):
            return self.reduce(node)
        return self.opaque(node, f"unsupported method .{method}() at node {node.name}")

    def passthrough(self, node: fx.Node, labels: Value) -> Value:
        """An op that keeps channels; pooling may not shrink an axis along which the ids vary."""
        shape = shapes(node)
        if isinstance(labels, np.ndarray) and isinstance(shape, tuple) and len(shape) == labels.ndim + 1:
            if any(size > 1 and size != out for size, out in zip(labels.shape, shape[1:], strict=True)):
                return self.opaque(node, f"channel ids vary along an axis that {node.name} resizes")
        return labels

    # -- layers ---------------------------------------------------------------------------
    def conv(self, node: fx.Node, name: str, conv: nn.modules.conv._ConvNd, labels: Value) -> Value:
        out_shape = shapes(node)
        spatial = int(np.prod(out_shape[2:])) if len(out_shape) > 2 else 1
        kernel = int(np.prod(conv.kernel_size))
        in_ids = self.channel_vector(node, labels, 1, conv.in_channels)
        if conv.groups == 1:
            out_ids = self.source_ids(name, conv.out_channels)
            self.record(LayerUse(name, "conv", in_ids, out_ids, spatial * kernel))
            return channel_labels(out_ids, len(out_shape), 1)
        if conv.groups == conv.in_channels == conv.out_channels and in_ids is not None:
            self.record(LayerUse(name, "depthwise", in_ids, None, spatial * kernel))
            return labels
        reason = f"grouped conv {name} (groups={conv.groups}) is kept whole"
        if in_ids is not None:
            self.ids.block(in_ids, reason)
        out_ids = self.source_ids(name, conv.out_channels)
        self.ids.block(out_ids, reason)
        per_group = conv.in_channels // conv.groups
        self.record(LayerUse(name, "fixed", None, None, spatial * kernel * per_group * conv.out_channels))
        return channel_labels(out_ids, len(out_shape), 1)

    def standardised_conv(self, node: fx.Node, name: str) -> Value:
        """A conv whose weight is transformed per output channel over its input channels (weight
        standardisation): output channels may go; a dense one keeps its input channels, which the
        transform's statistics span (a depthwise one's statistics are per channel)."""
        conv, labels = self.modules[name], self.value(node.args[0])
        if conv.groups == 1 and isinstance(labels, np.ndarray):
            self.ids.block(labels, f"weight-standardised conv {name} (its input channels are kept)")
        return self.conv(node, name, conv, labels)

    def linear(self, node: fx.Node, name: str, linear: nn.Linear, labels: Value) -> Value:
        out_shape = shapes(node)
        in_ids = self.channel_vector(node, labels, len(out_shape) - 1, linear.in_features)
        out_ids = self.source_ids(name, linear.out_features)
        leading = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
        self.record(LayerUse(name, "linear", in_ids, out_ids, leading))
        return channel_labels(out_ids, len(out_shape), len(out_shape) - 1)

    def norm(self, node: fx.Node, name: str, norm: nn.Module, labels: Value) -> Value:
        in_ids = self.channel_vector(node, labels, 1, norm.num_features)
        if in_ids is None:
            return labels
        self.record(LayerUse(name, "norm", in_ids, None))
        return labels

    def layer_norm(self, node: fx.Node, name: str, norm: nn.LayerNorm, labels: Value) -> Value:
        """A LayerNorm over the last axis normalises the channels it reads (sliced with them)."""
        if len(norm.normalized_shape) != 1 or not isinstance(labels, np.ndarray):
            return self.opaque(node, f"unsupported layer LayerNorm over {norm.normalized_shape} ({name})")
        in_ids = self.channel_vector(node, labels, labels.ndim, norm.normalized_shape[0])
        if in_ids is not None:
            self.record(LayerUse(name, "layer_norm", in_ids, None))
        return labels

    def channel_vector(self, node: fx.Node, labels: Value, axis: int, size: int) -> np.ndarray | None:
        """A layer's input channel ids along tensor ``axis``; blocks them when they are not a clean vector."""
        if not isinstance(labels, np.ndarray):
            return None
        vector = vector_along(labels, axis - 1, size)
        if vector is None:
            self.ids.block(labels, f"channels of {node.target} vary across other axes")
        return vector

    def record(self, use: LayerUse) -> None:
        earlier = self.first_inputs.setdefault(use.module, use.in_ids)
        if earlier is not use.in_ids and earlier is not None and use.in_ids is not None:
            self.ids.union_arrays(earlier, use.in_ids)  # a shared layer reads the same channels each call
        if use.role in (*DENSE_ROLES, "attention"):
            use.base_macs = (
                use.macs_factor * len(use.in_ids if use.in_ids is not None else ()) * len(use.out_ids)
            )
            if use.in_ids is None:  # an input we cannot see channel-wise: its count is fixed
                use.base_macs = use.macs_factor * input_width(self.modules[use.module]) * len(use.out_ids)
        elif use.role in ("depthwise", "product") and use.in_ids is not None:
            use.base_macs = use.macs_factor * len(use.in_ids)
        else:
            use.base_macs = use.macs_factor
        self.graph.uses.append(use)

    # -- re-arranging ops -----------------------------------------------------------------
    def elementwise(self, node: fx.Node) -> Value:
        out_shape = shapes(node)
        operands = [self.value(a) for a in list(node.args) + list(node.kwargs.values())]
        raw_args = list(node.args) + list(node.kwargs.values())
        arrays: list[np.ndarray] = []
        params = [v for v in operands if isinstance(v, ParamValue) and v.numel > 1]
        for raw, value in zip(raw_args, operands, strict=True):
            if isinstance(value, np.ndarray):
                if len(shapes(raw) or ()) != len(out_shape or ()):
                    return self.opaque(node, f"broadcast over the batch axis at node {node.name}")
                arrays.append(value)
        if not arrays:
            return None
        try:
            shape = np.broadcast_shapes(*(a.shape for a in arrays))
        except ValueError:
            return self.opaque(node, f"incompatible channel layouts at node {node.name}")
        first = np.broadcast_to(arrays[0], shape)
        for other in arrays[1:]:
            self.ids.union_arrays(first, np.broadcast_to(other, shape))
        for param in params:  # a position embedding, a layer scale: sliced with the channels it meets
            joined = join_param(self, param, first, len(out_shape))
            if isinstance(joined, str):
                return self.opaque(node, f"{joined} at node {node.name}")
        return compress(first)

    def getitem(self, node: fx.Node) -> Value:
        container, index = node.args[0], node.args[1]
        value = self.value(container)
        if isinstance(value, list):
            return value[index] if isinstance(index, int) else self.opaque(node, f"indexing at {node.name}")
        if not isinstance(value, np.ndarray):
            return None
        in_shape = shapes(container)
        full = np.broadcast_to(value, in_shape[1:])
        index = resolved(index if isinstance(index, tuple) else (index,))  # ints read from shapes
        if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice))) for i in index):
            return self.opaque(node, f"tensor indexing at node {node.name}")
        batch, rest = (index[0], index[1:]) if index and index[0] is not Ellipsis else (slice(None), index)
        if batch is None or isinstance(batch, int):
            return self.opaque(node, f"indexing the batch axis at node {node.name}")
        sliced = full[rest]
        if sliced.size and any(cuts(full, axis, i) for axis, i in enumerate(plain(rest))):
            return self.opaque(node, f"fixed slice of channels at node {node.name}")
        return compress(sliced)

    def cat(self, node: fx.Node) -> Value:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        out_shape = shapes(node)
        dim = dim % len(out_shape)
        values = self.cat_values(tensors, len(out_shape))
        if dim == 0 or any(not isinstance(v, np.ndarray) for v in values):
            return self.opaque(node, f"concatenation on axis {dim} at node {node.name}")
        if all(v.shape[dim - 1] == 1 for v in values):  # along tokens / space: the channels are the same
            first = np.broadcast_to(values[0], np.broadcast_shapes(*(v.shape for v in values)))
            for other in values[1:]:
                self.ids.union_arrays(first, other)
            return compress(first)
        parts = []
        for tensor, labels in zip(tensors, values, strict=True):
            parts.append(np.broadcast_to(labels, shapes(tensor)[1:]))
        return compress(np.concatenate(parts, axis=dim - 1))

    def patch_merging(self, node: fx.Node) -> Value:
        """Four spatial neighbours side by side on the last axis: the channels four times over."""
        labels = self.value(node.args[0])
        if not isinstance(labels, np.ndarray) or any(size > 1 for size in labels.shape[:-1]):
            return self.opaque(node, f"patch merging of mixed channels at node {node.name}")
        return np.concatenate([labels] * 4, axis=-1)

    def cat_values(self, tensors: list, ndim: int) -> list:
        """The labels of every concatenated tensor; a model tensor (a class token) gets the labels of
        the channels it is concatenated with."""
        values = [self.value(t) for t in tensors]
        reference = next((v for v in values if isinstance(v, np.ndarray)), None)
        for index, value in enumerate(values):
            if isinstance(value, ParamValue) and reference is not None:
                joined = join_param(self, value, reference, ndim)
                values[index] = joined if isinstance(joined, np.ndarray) else None
        return [compress(v) if isinstance(v, np.ndarray) else v for v in values]

    def chunk(self, node: fx.Node, kind: str) -> Value:
        labels = self.value(node.args[0])
        in_shape = shapes(node.args[0])
        dim = (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)) % len(in_shape)
        if not isinstance(labels, np.ndarray) or dim == 0:
            return self.opaque(node, f"{kind} on axis {dim} at node {node.name}")
        full = np.broadcast_to(labels, in_shape[1:])
        sizes = [s[dim] for s in shapes(node)]
        if kind == "split" and len(set(sizes)) > 1 and full.shape[dim - 1] > 1:
            return self.opaque(node, f"split into fixed unequal sizes at node {node.name}")
        pieces = np.split(full, np.cumsum(sizes)[:-1], axis=dim - 1)
        if kind == "split":  # a fixed split size does not follow pruning
            varying = any(compress(p).size > 1 for p in pieces)
            if varying:
                return self.opaque(node, f"split with a fixed size at node {node.name}")
        for piece in pieces[1:]:
            if piece.shape == pieces[0].shape:
                self.ids.union_arrays(pieces[0], piece)  # chunks stay equal in size only if pruned alike
            else:
                return self.opaque(node, f"uneven chunks at node {node.name}")
        return [compress(p) for p in pieces]

    def reshape(self, node: fx.Node, labels: Value, dynamic: bool) -> Value:
        if not isinstance(labels, np.ndarray):
            guard_sizes(self, node)  # its sizes cannot follow channels it does not see
            return None if labels is None else self.opaque(node, f"reshape at {node.name}")
        in_shape, out_shape = shapes(node.args[0]), shapes(node)
        if in_shape[0] != out_shape[0]:
            guard_sizes(self, node)
            return self.opaque(node, f"reshape across the batch axis at node {node.name}")
        full = np.broadcast_to(labels, in_shape[1:]).reshape(out_shape[1:])
        if not dynamic:
            hold_fixed_axes(self, node, full)
        return compress(full)

    def permute(self, node: fx.Node) -> Value:
        labels = self.value(node.args[0])
        if not isinstance(labels, np.ndarray):
            return None
        ndim = labels.ndim + 1
        if node.target in ops.AXIS_SWAPS:  # transpose, swapaxes, swapdims: two axes trade places
            if len(node.args) != 3:
                return self.opaque(node, f"axes given by keyword at node {node.name}")
            a, b = (d % ndim for d in node.args[1:3])
            order = list(range(ndim))
            order[a], order[b] = order[b], order[a]
        else:
            dims = node.args[1] if isinstance(node.args[1], (list, tuple)) else node.args[1:]
            order = [d % ndim for d in dims]
        if order[0] != 0:
            return self.opaque(node, f"permutation of the batch axis at node {node.name}")
        return np.transpose(labels, [d - 1 for d in order[1:]])

    def reduce(self, node: fx.Node) -> Value:
        labels = self.value(node.args[0])
        if not isinstance(labels, np.ndarray):
            return None
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if dims is None:
            return self.opaque(node, f"reduction over all axes at node {node.name}")
        ndim = labels.ndim + 1
        dims = sorted({d % ndim for d in (dims if isinstance(dims, (list, tuple)) else [dims])})
        if 0 in dims or any(labels.shape[d - 1] > 1 for d in dims):
            return self.opaque(node, f"reduction over channels at node {node.name}")
        if keepdim:
            return labels
        return labels.reshape([s for a, s in enumerate(labels.shape) if a + 1 not in dims])
