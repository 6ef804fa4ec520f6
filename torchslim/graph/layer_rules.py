"""Rules for layers written as functional calls, slices that keep a whole axis, and which module
holds an op (for messages): what timm's layers need beyond plain torch.nn modules."""

from __future__ import annotations

from collections.abc import Callable

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
    """The conv module whose weight a functional conv call uses after transforming it (weight
    standardisation: timm's StdConv2d, ScaledStdConv2d), if the weight comes from that module's
    parameters alone."""
    kind, _ = ops.FUNCTIONAL_LAYERS[target]
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    if not isinstance(weight, fx.Node) or not issubclass(kind, ops.CONV_TYPES):
        return None
    owners, pending, seen = set(), [weight], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "placeholder":
            return None  # the weight depends on the input: not a layer
        if current.op == "get_attr":
            owners.add(str(current.target).rpartition(".")[0])
        pending.extend(n for n in current.all_input_nodes)
    if len(owners) != 1:
        return None
    owner = owners.pop()
    module = modules.get(owner)
    return owner if isinstance(module, kind) and _same_conv_settings(node, module) else None


def _same_conv_settings(node: fx.Node, module: nn.Module) -> bool:
    """Whether a functional conv call uses the module's own groups (linear, norm: always)."""
    if not isinstance(module, ops.CONV_TYPES):
        return True
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    return groups == module.groups


def keeps_whole_axis(item: slice, size: int) -> bool:
    """``x[:, :n]`` with ``n`` at least the axis size keeps every channel, and still does after pruning
    (the axis only shrinks; slicing clamps), e.g. GhostNet's ``out[:, : self.out_chs]``."""
    stop_ok = item.stop is None or (isinstance(item.stop, int) and item.stop >= size)
    return item.start in (None, 0) and item.step in (None, 1) and stop_ok


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
