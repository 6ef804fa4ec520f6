"""Sizes a forward computes from tensor shapes, and the channels they tie down.

``B, N, C = x.shape; qkv(x).reshape(B, N, 3, heads, C // heads)`` reads x's width: once pruning
narrows x, that reshape no longer fits the tensor it reshapes. Every int an op is handed is traced
back to the tensor axes it is read from. An int read from an axis along which channels vary either
follows pruning (a reshape axis that is exactly that axis's size and holds as many channels: the
two are joined) or that tensor's channels are kept whole, so that the int stays what it was when
traced. Ints read from the batch axis or from spatial/token axes never change with pruning.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from .joins import width_attribute
from .labels import compress, vector_along
from .nodes import inside, shapes

ChannelTracer = Any  # a torchslim.graph.tracer.ChannelTracer (which imports this module)

# Ops that read a tensor's rank or type, never its sizes.
_NO_SIZE_METHODS = {"dim", "ndimension"}
_NO_SIZE_ATTRIBUTES = {"ndim", "dtype", "device", "is_cuda", "requires_grad", "layout"}
RESHAPE_METHODS = ("view", "reshape")


@dataclass(frozen=True)
class ShapeRead:
    """The size of one axis of a traced tensor, as the forward read it."""

    tensor: fx.Node
    axis: int


@dataclass(frozen=True)
class SizeOrigin:
    """Where an int comes from: every tensor axis it is computed from; ``direct`` when it is exactly
    one axis's size; ``divisor`` when it is one axis's size floor-divided by a literal."""

    reads: frozenset[ShapeRead] = frozenset()
    direct: bool = False
    divisor: int | None = None


LITERAL = SizeOrigin()


class SizeOrigins:
    """The origin of every int-valued node of one graph (memoised)."""

    def __init__(self) -> None:
        self._memo: dict[fx.Node, SizeOrigin] = {}

    def origin(self, arg: Any) -> SizeOrigin:
        """The origin of an op's argument: a literal, or an int (or shape) node."""
        if isinstance(arg, (list, tuple, slice, dict)):
            return _merged([self.origin(item) for item in _items(arg)])
        if not isinstance(arg, fx.Node):
            return LITERAL
        if arg not in self._memo:
            self._memo[arg] = self._origin(arg)
        return self._memo[arg]

    def _origin(self, node: fx.Node) -> SizeOrigin:
        if node.op == "call_method" and node.target == "size" and _size_dim(node) is not None:
            return _read(node.args[0], _size_dim(node))
        if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], int):
            items = self.elements(node.args[0])
            if items is not None and -len(items) <= node.args[1] < len(items):
                item = items[node.args[1]]
                return LITERAL if isinstance(item, int) else item
        if node.op == "call_function" and node.target is operator.floordiv and isinstance(node.args[1], int):
            inner = self.origin(node.args[0])
            if inner.direct and node.args[1] > 0:
                return SizeOrigin(inner.reads, divisor=node.args[1])
        items = self.elements(node)
        if items is not None:  # a shape or part of one, used whole: the axes it holds
            return SizeOrigin(_merged([LITERAL if isinstance(i, int) else i for i in items]).reads)
        if _is_tensor(node):  # a tensor met on the way (x.numel()): every axis of it
            return _merged([_read(node, axis) for axis in range(len(shapes(node)))])
        if _reads_no_size(node):
            return LITERAL
        found = [self.origin(arg) for arg in node.all_input_nodes]
        return SizeOrigin(_merged(found).reads)

    def elements(self, arg: Any) -> list[int | SizeOrigin] | None:
        """Every item of a shape-like tuple (``x.shape``, ``x.size()``, a slice of one, a sum of them
        and literal tuples): a literal int, or its origin; None when it is not one."""
        if isinstance(arg, (list, tuple)):
            return [item if isinstance(item, int) else self.origin(item) for item in arg]
        if not isinstance(arg, fx.Node):
            return None
        whole_shape = (arg.op == "call_function" and arg.target is getattr and arg.args[1] == "shape") or (
            arg.op == "call_method" and arg.target == "size" and _size_dim(arg) is None
        )
        if whole_shape and _is_tensor(arg.args[0]):
            return [_read(arg.args[0], axis) for axis in range(len(shapes(arg.args[0])))]
        if arg.op == "call_function" and arg.target is operator.getitem and isinstance(arg.args[1], slice):
            items = self.elements(arg.args[0])
            return None if items is None else items[arg.args[1]]
        if arg.op == "call_function" and arg.target is operator.add:
            parts = [self.elements(a) for a in arg.args]
            return None if any(p is None for p in parts) else [item for p in parts for item in p]
        return None

    def reshape_sizes(self, node: fx.Node) -> list[int | SizeOrigin] | None:
        """A view/reshape's target size, axis by axis: literal ints, or the origin of a computed one;
        None when the sizes cannot be told apart (one opaque tuple)."""
        args = list(node.args[1:]) or [node.kwargs.get("shape")]
        if len(args) == 1 and not isinstance(args[0], int):
            args = self.elements(args[0])
            if args is None:
                return None
        return [arg if isinstance(arg, (int, SizeOrigin)) else self.origin(arg) for arg in args]


def _items(arg: Any) -> list:
    if isinstance(arg, slice):
        return [arg.start, arg.stop, arg.step]
    return list(arg.values() if isinstance(arg, dict) else arg)


def _merged(found: list[SizeOrigin]) -> SizeOrigin:
    reads = frozenset().union(*(f.reads for f in found)) if found else frozenset()
    if len(found) == 1:
        return found[0]
    return SizeOrigin(reads)


def _read(tensor: Any, axis: int) -> SizeOrigin:
    shape = shapes(tensor)
    if not isinstance(shape, tuple) or not shape:
        return LITERAL
    return SizeOrigin(frozenset({ShapeRead(tensor, axis % len(shape))}), direct=True)


def _size_dim(node: fx.Node) -> int | None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return dim if isinstance(dim, int) else None


def _is_tensor(node: Any) -> bool:
    return isinstance(node, fx.Node) and isinstance(shapes(node), tuple)


def _reads_no_size(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _NO_SIZE_METHODS
    return node.op == "call_function" and node.target is getattr and node.args[1] in _NO_SIZE_ATTRIBUTES


def is_reshape(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in RESHAPE_METHODS) or (
        node.op == "call_function" and node.target is torch.reshape
    )


# -- what the tracer does with them ---------------------------------------------------------------
def channel_labels_of(tracer: ChannelTracer, read: ShapeRead) -> np.ndarray | None:
    """The full label array of the tensor a read looks at, when channels vary along the axis read
    (the batch axis never does)."""
    labels = tracer.value(read.tensor)
    shape = shapes(read.tensor)
    if read.axis == 0 or not isinstance(labels, np.ndarray) or len(shape) != labels.ndim + 1:
        return None
    full = np.broadcast_to(labels, shape[1:])
    return full if compress(full).shape[read.axis - 1] > 1 else None


def keep_read_channels(tracer: ChannelTracer, node: fx.Node, origin: SizeOrigin) -> None:
    """Keep whole the channels of every tensor whose width ``origin`` reads: the int stays as traced."""
    for read in origin.reads:
        full = channel_labels_of(tracer, read)
        if full is not None:
            reason = (
                f"{_op_name(node)} at node {node.name} takes a size from the width of "
                f"{read.tensor.name} (axis {read.axis}){inside(node)}"
            )
            tracer.ids.block(full, reason)


def guard_sizes(tracer: ChannelTracer, node: fx.Node) -> None:
    """An op (not a reshape) handed ints read from channel widths keeps those channels whole."""
    if node.op not in ("call_function", "call_method", "call_module") or shapes(node) is None:
        return
    for arg in _int_nodes(list(node.args) + list(node.kwargs.values())):
        keep_read_channels(tracer, node, tracer.sizes.origin(arg))


def _int_nodes(args: Any) -> list[fx.Node]:
    """The nodes among (nested) arguments that are numbers or shapes (their traced value is known)."""
    if isinstance(args, fx.Node):
        return [args] if "value" in args.meta else []
    if isinstance(args, (list, tuple, slice, dict)):
        return [node for item in _items(args) for node in _int_nodes(item)]
    return []


def follows(tracer: ChannelTracer, origin: SizeOrigin, full: np.ndarray, axis: int) -> bool:
    """Whether a reshape's output ``axis`` (labels ``full``) sized by ``origin`` keeps fitting after
    pruning: it is exactly one read axis's size and both hold a clean vector of as many channels: the
    same channels (in any order: a shuffle), or others, which are then joined position by position
    (removed together, so the counts stay equal)."""
    if not origin.direct or axis < 1:
        return False
    (read,) = origin.reads
    source = channel_labels_of(tracer, read)
    if source is None:
        return False
    size = full.shape[axis - 1]
    read_ids = vector_along(source, read.axis - 1, source.shape[read.axis - 1])
    out_ids = vector_along(full, axis - 1, size)
    if read_ids is None or out_ids is None or len(read_ids) != size:
        return False
    if not np.array_equal(np.sort(read_ids), np.sort(out_ids)):
        tracer.ids.union_arrays(read_ids, out_ids)
    return True


def splits_width(
    tracer: ChannelTracer, origin: SizeOrigin, full: np.ndarray, axis: int, literal_axes: set[int]
) -> bool:
    """Whether an output axis sized ``C // k`` follows pruning: the reshape splits exactly the
    channels of that width C into this axis and literal axes of sizes multiplying to k (a channel
    shuffle's ``view(b, groups, c // groups, h, w)``). The literal axes keep their sizes, so the kept
    width stays a multiple of k and ``C // k`` is this axis's kept size."""
    (read,) = origin.reads
    source = channel_labels_of(tracer, read)
    if source is None or axis < 1:
        return False
    compressed = compress(full)
    varying = [a + 1 for a in range(compressed.ndim) if compressed.shape[a] > 1]
    others = [a for a in varying if a != axis]
    if axis not in varying or any(a not in literal_axes for a in others):
        return False
    same_channels = np.array_equal(np.unique(compressed), np.unique(compress(source)))
    return same_channels and int(np.prod([full.shape[a - 1] for a in others])) == origin.divisor


def reshape_fixed_axes(
    tracer: ChannelTracer, node: fx.Node, full: np.ndarray
) -> list[tuple[int, int | None]]:
    """(axis, literal) of the output axes of a view/reshape whose size does not follow pruning: a
    literal number (its value), or an int read from shapes (None) that does not follow the channels
    of its axis; the channels such an int is read from are kept whole. -1 follows."""
    sizes = tracer.sizes.reshape_sizes(node)
    if sizes is None:  # one opaque shape tuple: every axis is fixed, every width it reads kept
        keep_read_channels(tracer, node, tracer.sizes.origin(list(node.args[1:])))
        return [(axis, None) for axis in range(len(shapes(node)))]
    fixed: list[tuple[int, int | None]] = []
    literal_axes = {axis for axis, size in enumerate(sizes) if isinstance(size, int) and size != -1}
    for axis, size in enumerate(sizes):
        if isinstance(size, int):
            if size != -1:
                fixed.append((axis, size))
        elif size.divisor is not None and splits_width(tracer, size, full, axis, literal_axes):
            continue
        elif size.reads and not follows(tracer, size, full, axis):
            keep_read_channels(tracer, node, size)
            fixed.append((axis, None))
        elif not size.reads:
            fixed.append((axis, None))
    return fixed


def resolved(value: Any) -> Any:
    """An index with every int node replaced by the value it had when traced (slices included)."""
    if isinstance(value, fx.Node):
        return value.meta.get("value", value)
    if isinstance(value, slice):
        return slice(resolved(value.start), resolved(value.stop), resolved(value.step))
    if isinstance(value, tuple):
        return tuple(resolved(v) for v in value)
    if isinstance(value, list):
        return [resolved(v) for v in value]
    return value


def _op_name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


def hold_fixed_axes(tracer: ChannelTracer, node: fx.Node, full: np.ndarray) -> None:
    """A view/reshape output axis whose size does not follow pruning keeps its size: its rows
    (positions along it) are pruned alike; unless it is the model's width attribute, which surgery
    sets to the kept count."""
    compressed = compress(full)  # the same pairs, without the copies along constant axes (tokens)
    for axis, literal in reshape_fixed_axes(tracer, node, full):
        if axis < 1 or compressed.shape[axis - 1] == 1:
            continue
        vector = vector_along(compressed, axis - 1, full.shape[axis - 1])
        if literal is not None and width_attribute(tracer, node, literal, vector):
            continue
        first = np.take(compressed, [0], axis=axis - 1)
        for k in range(1, compressed.shape[axis - 1]):
            tracer.ids.union_arrays(first, np.take(compressed, [k], axis=axis - 1))
