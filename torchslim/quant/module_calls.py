"""One module instance per call before PT2E capture.

torchao's quantizers find fusion patterns (conv -> add -> relu) through ``get_source_partitions``,
which groups graph nodes by the module that produced them. A module called more than once, such as
torchvision's ``BasicBlock.relu`` (after the first conv and after the residual add), is then one
partition with several output nodes, and the x86 quantizer refuses the whole graph. Giving every
further call of a parameter-free module its own copy makes each call its own partition; the model
computes the same and its state dict keeps the same keys (in the order of the calls).
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict

import torch.fx
from torch import nn


def _stateless(module: nn.Module) -> bool:
    return next(iter(module.parameters()), None) is None and next(iter(module.buffers()), None) is None


def _reused_stateless(traced: torch.fx.GraphModule) -> set[str]:
    calls = Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
    return {
        target for target, count in calls.items() if count > 1 and _stateless(traced.get_submodule(target))
    }


def _rename_call(node: torch.fx.Node, name: str) -> None:
    """Point ``node`` at module ``name``, also in the module stack the tracer recorded (what
    torch.export keeps and the source partitions read)."""
    node.target = name
    stack = node.meta.get("nn_module_stack")
    if stack:
        *outer, (_, (_, module_type)) = stack.items()
        node.meta["nn_module_stack"] = OrderedDict([*outer, (name, (name, module_type))])


def one_module_per_call(model: nn.Module) -> nn.Module:
    """``model`` with each repeated call of a parameter-free module made a call of its own copy (a
    ``GraphModule``); ``model`` itself when nothing is reused, when it cannot be traced symbolically,
    or when the traced module would not keep its state dict keys."""
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - untraceable: capture the model as it is
        return model
    reused = _reused_stateless(traced)
    if not reused:
        return model
    seen: Counter[str] = Counter()
    for node in traced.graph.nodes:
        if node.op != "call_module" or node.target not in reused:
            continue
        seen[node.target] += 1
        if seen[node.target] > 1:
            name = f"{node.target}_call{seen[node.target]}"
            traced.add_submodule(name, copy.deepcopy(traced.get_submodule(node.target)))
            _rename_call(node, name)
    traced.recompile()
    traced.train(model.training)
    if set(traced.state_dict()) != set(model.state_dict()):
        return model
    return traced
