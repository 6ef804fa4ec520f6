"""Rules for layers written as functional calls, slices that keep a whole axis, and which module
holds an op (for messages): what timm's layers need beyond plain torch.nn modules."""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable

import torch
import torch.fx as fx
from torch import nn

from . import ops


def functional_layer(node: fx.Node, target: Callable, modules: dict[str, nn.Module]) -> str | None:
    """The module whose own parameter a functional conv/linear/batch-norm call uses, if any: the call
    is then that module's layer call (surgery resizes the module as for a plain layer)."""
    kind, positions = ops.FUNCTIONAL_LAYERS[target]
    for position in positions:
        arg = node.args[position] if len(node.args) > position else None
        if arg is None and position in ops.FUNCTIONAL_KWARGS:
            arg = node.kwargs.get(ops.FUNCTIONAL_KWARGS[position])
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            owner, _, _ = str(arg.target).rpartition(".")
            module = modules.get(owner)
            if isinstance(module, kind) and _same_conv_settings(node, module):
                return owner
    return None


def transformed_weight_conv(node: fx.Node, target: Callable, modules: dict[str, nn.Module]) -> str | None:
    """The conv module whose weight a functional conv call uses after a per-output-channel transform
    (weight standardisation: timm's StdConv2d, ScaledStdConv2d), if any.

    Every op between the module's weight and the call must be one that keeps output channels apart
    (reshapes, normalisation, arithmetic, reductions over the other axes), and every intermediate that
    depends on the weight must keep the output channels on its first axis (or, for batch norm over the
    flattened weight, on axis 1 of a (1, out, n) view); otherwise the call is not understood.
    """
    kind, _ = ops.FUNCTIONAL_LAYERS[target]
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    if not isinstance(weight, fx.Node) or not issubclass(kind, ops.CONV_TYPES):
        return None
    owners = {str(n.target).rpartition(".")[0] for n in _ancestors(weight) if n.op == "get_attr"}
    owners = {owner for owner in owners if isinstance(modules.get(owner), kind)}
    if len(owners) != 1:
        return None
    owner = owners.pop()
    module = modules[owner]
    if _shape(weight) != tuple(module.weight.shape) or not _same_conv_settings(node, module):
        return None
    source = f"{owner}.weight"
    for current in _ancestors(weight):
        if current.op == "placeholder":
            return None  # the weight depends on the input: not a layer's weight
        if current.op == "get_attr" or not _depends_on(current, source):
            continue
        if not _keeps_output_channels(current, module.out_channels):
            return None
    return owner


def _ancestors(node: fx.Node) -> list[fx.Node]:
    found, pending = [], [node]
    while pending:
        current = pending.pop()
        if current not in found:
            found.append(current)
            pending.extend(current.all_input_nodes)
    return found


def _depends_on(node: fx.Node, attribute: str) -> bool:
    return any(n.op == "get_attr" and str(n.target) == attribute for n in _ancestors(node))


def _keeps_output_channels(node: fx.Node, count: int) -> bool:
    if node.op == "call_method":
        allowed = node.target in ops.WEIGHT_TRANSFORM_METHODS
    elif node.op == "call_function":
        allowed = node.target in ops.WEIGHT_TRANSFORM_FUNCTIONS
        if node.target is operator.getitem:  # only the parts of var_mean / std_mean
            allowed = getattr(node.args[0], "target", None) in (torch.var_mean, torch.std_mean)
    else:
        allowed = False
    meta = node.meta.get("tensor_meta")
    parts = [meta] if hasattr(meta, "shape") else list(meta) if isinstance(meta, (list, tuple)) else []
    shapes = [tuple(m.shape) for m in parts if hasattr(m, "shape")]
    if not allowed or not shapes or len(shapes) != len(parts):
        return False
    return all(_per_output(shape, count) for shape in shapes)


def _per_output(shape: tuple[int, ...], count: int) -> bool:
    """Output channels on axis 0, or on axis 1 of a (1, out, ...) view."""
    return (len(shape) >= 1 and shape[0] == count) or (len(shape) >= 2 and shape[:2] == (1, count))


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _same_conv_settings(node: fx.Node, module: nn.Module) -> bool:
    """Whether a functional conv call uses the module's own groups (linear, norm: always)."""
    if not isinstance(module, ops.CONV_TYPES):
        return True
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    return groups == module.groups


def record_owner(owners: dict[str, str], node: fx.Node) -> None:
    """Note which module class holds ``node`` (and, for a layer call, the layer), for messages."""
    owner = owner_class(node)
    if owner is not None:
        owners[node.name] = owner
        if node.op == "call_module":
            owners[str(node.target)] = owner


def owner_class(node: fx.Node) -> str | None:
    """The class name of the module whose forward holds ``node`` (a layer call: its parent's), skipping
    containers; None at the model's top level."""
    stack = [entry[1] for entry in node.meta.get("nn_module_stack", {}).values()]
    if node.op == "call_module" and stack:
        stack = stack[:-1]
    owner = next((kind for kind in reversed(stack) if not _is_container(kind)), None)
    return owner.__name__ if owner is not None else None


def _is_container(kind: object) -> bool:
    return isinstance(kind, type) and issubclass(kind, (nn.Sequential, nn.ModuleList, nn.ModuleDict))


def timm_spatial_functions() -> tuple[Callable, ...]:
    """timm's functions that only pad or crop the spatial axes, from Python arithmetic on the input's size
    (TensorFlow-style 'same' padding): fx cannot trace their arithmetic, so they stay one call, which
    keeps channels as they are."""
    padding = sys.modules.get("timm.layers.padding")
    return (padding.pad_same,) if padding is not None and hasattr(padding, "pad_same") else ()


def timm_tracer(base: type[fx.Tracer] = fx.Tracer) -> fx.Tracer | None:
    """A tracer that keeps timm's untraceable modules (``timm.layers.register_notrace_module``) as single
    calls and wraps its untraceable functions; None when timm is not loaded. Conv, linear and norm
    subclasses among them are still traced through: as one call they would pass for plain layers.
    ``base``: the tracer whose own leaves are kept too."""
    registry = sys.modules.get("timm.layers._fx")
    if registry is None:
        return None
    known = ops.CONV_TYPES + (nn.Linear, nn.modules.batchnorm._NormBase)
    leaves = tuple(kind for kind in registry.get_notrace_modules() if not issubclass(kind, known))
    functions = tuple(registry.get_notrace_functions()) + timm_spatial_functions()

    class TimmTracer(base):
        def is_leaf_module(self, module: nn.Module, name: str) -> bool:
            return isinstance(module, leaves) or super().is_leaf_module(module, name)

    return TimmTracer(autowrap_functions=functions)
