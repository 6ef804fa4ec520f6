"""Trace a model with torch.fx, record every node's output shape, and follow channel labels through it.

torch.fx symbolically traces every torchvision classifier and keeps module
names, which is what surgery needs; one shape-propagation pass gives each node's
output shape, from which :class:`~torchslim.graph.tracer.ChannelTracer` follows
the channels op by op.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re

import torch
import torch.fx as fx
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils.stateless import _reparametrize_module

from torchslim.errors import PruningError
from torchslim.nn import eval_mode, train_mode

from .attention import is_attention_leaf
from .channel_graph import NODE_ROLES, ChannelGraph
from .layer_rules import timm_tracer
from .macs import counting_macs
from .tracer import ChannelTracer


def trace_channels(model: nn.Module, example_input: torch.Tensor) -> tuple[ChannelGraph, fx.GraphModule]:
    """Trace ``model`` on ``example_input`` and return its channel graph."""
    graph_module, inference_layers = _symbolic_trace(model)
    try:
        _propagate_shapes(model, graph_module, example_input[:1])
    except Exception as error:
        if inference_layers is None:
            raise _cannot_run(model, example_input, error) from None
        if _train_only_layers(graph_module, inference_layers):
            raise _train_only_layers_cannot_run(
                model, graph_module, inference_layers, example_input, error
            ) from None
        # the training graph fails but calls no layer the eval graph does not: prune from the eval graph,
        # which resizes every layer there is
        graph_module, inference_layers = _eval_trace(model, example_input, error)
    graph = ChannelTracer(model, graph_module).run()
    if inference_layers is not None:
        for use in graph.uses:
            use.inference = use.role in NODE_ROLES or _called_in(use.module, inference_layers)
    return graph, graph_module


def _called_in(module: str, called: set[str]) -> bool:
    """Whether ``module`` or a module containing it (an attention layer's out_proj) is called."""
    parts = module.split(".")
    return any(".".join(parts[:end]) in called for end in range(len(parts), 0, -1))


def _cannot_run(model: nn.Module, example_input: torch.Tensor, error: Exception) -> PruningError:
    return PruningError(
        f"cannot run {type(model).__name__} on input {tuple(example_input.shape)}{_failing_op(error)}: "
        f"{_root(error)}"
    )


# How shape propagation names the node it failed at: "... = call_method[target=view](args = (%mask, ..."
_FAILED_NODE = re.compile(r"= (call_\w+)\[target=([^\]]+)\]\(args = \(%?([\w.]*)")


def _failing_op(error: BaseException) -> str:
    """`` at op <target> (of <its first input>)`` from the error shape propagation wrapped, if it says."""
    while error is not None:
        match = _FAILED_NODE.search(str(error))
        if match:
            _, target, first = match.groups()
            return f" at op {target}" + (f" of {first}" if first else "")
        error = error.__cause__
    return ""


def _root(error: BaseException) -> str:
    """The first line of the error that started ``error`` (shape propagation wraps it in its own)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _train_only_layers(graph_module: fx.GraphModule, inference_layers: set[str]) -> list[str]:
    """The top-level layers the training graph calls and an eval-mode forward does not."""
    called = [str(n.target) for n in graph_module.graph.nodes if n.op == "call_module"]
    return sorted({name.split(".")[0] for name in called if name not in inference_layers})


def _eval_trace(model: nn.Module, example_input: torch.Tensor, train_error: Exception):
    """The eval-mode graph of ``model``, shapes propagated; refused as ``train_error`` said when even
    that graph cannot run."""
    with eval_mode(model):
        graph_module = symbolic_trace(model)
    try:
        _propagate_shapes(model, graph_module, example_input[:1])
    except Exception:
        raise _cannot_run(model, example_input, train_error) from None
    return graph_module, None


def _train_only_layers_cannot_run(
    model: nn.Module,
    graph_module: fx.GraphModule,
    inference_layers: set[str],
    example_input,
    error: Exception,
) -> PruningError:
    """Pruning on the eval graph alone would leave the training-only layers (an auxiliary head)
    unresized, and the pruned model would fail in training: refuse and say which size to use."""
    train_only = _train_only_layers(graph_module, inference_layers)
    return PruningError(
        f"the training-only layers of {type(model).__name__} ({', '.join(train_only)}) cannot run on input "
        f"{tuple(example_input.shape)} ({_root(error)}); pass an example input of a size the model trains at"
    )


def _symbolic_trace(model: nn.Module) -> tuple[fx.GraphModule, set[str] | None]:
    """Trace in train mode, so layers used only in training (auxiliary heads) are resized too;
    in the model's own mode when the training graph cannot be traced. Also returns the layers
    an eval-mode forward calls (None: the same graph), which are the ones inference pays for."""
    try:
        with train_mode(model):
            graph_module = symbolic_trace(model)
        with eval_mode(model):
            inference = _called_layers(symbolic_trace(model))
        return graph_module, inference
    except Exception:  # fx raises many types for untraceable Python
        try:
            return symbolic_trace(model), None
        except Exception as error:
            where = getattr(error, "traced_module", None)
            place = f" in {where}" if where else ""
            raise PruningError(
                f"cannot trace {type(model).__name__} with torch.fx{place}: {type(error).__name__}: {error}"
            ) from None


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with every attention layer (pruned ones too) kept as one call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            is_attention_leaf(m) or _is_timm_layer_norm(m) or super().is_leaf_module(m, module_qualified_name)
        )

    def call_module(self, m: nn.Module, forward, args, kwargs):
        """As fx does; a failure inside a module is marked with the innermost module's name, so the
        refusal names where tracing gave up."""
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as error:
            if not hasattr(error, "traced_module"):
                try:
                    path = self.path_of_module(m) or "<model>"
                except NameError:  # a module that is not part of the model
                    path = "?"
                error.traced_module = f"{path} ({type(m).__name__})"
            raise


def _is_timm_layer_norm(module: nn.Module) -> bool:
    """timm's LayerNorm normalises the last axis like nn.LayerNorm (torchvision's LayerNorm2d does not)."""
    kind = type(module)
    return (
        isinstance(module, nn.LayerNorm)
        and kind.__name__ == "LayerNorm"
        and kind.__module__.startswith("timm.")
    )


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with attention layers as leaves; failing that, with the modules and
    functions timm marks as untraceable kept whole too (when timm is loaded): their channels are then
    blocked, named, instead of the whole model."""
    try:
        return fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except Exception:
        tracer = timm_tracer(_Tracer)
        if tracer is None:
            raise
        return fx.GraphModule(model, tracer.trace(model), type(model).__name__)


def _called_layers(graph_module: fx.GraphModule) -> set[str]:
    """Modules a graph calls, or whose parameters it reads (a functional call inside a re-implemented
    forward, e.g. timm's BatchNormAct2d)."""
    called = set()
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            called.add(str(node.target))
        elif node.op == "get_attr":
            called.add(str(node.target).rpartition(".")[0])
    return called


def _propagate_shapes(model: nn.Module, graph_module: fx.GraphModule, example_input: torch.Tensor) -> None:
    """Record every node's output shape (and the MACs it costs) without doing the arithmetic.

    First choice: parameters swapped for meta tensors (no data, no copies); then
    fake tensors (a deep copy); last, a real forward pass, for ops neither supports.
    """
    # ShapeProp prints a traceback for every failing node; the failures here are expected and retried.
    quiet = contextlib.redirect_stderr(io.StringIO())
    with eval_mode(model), torch.no_grad(), quiet:
        try:
            meta = {
                k: v.to("meta")
                for k, v in itertools.chain(graph_module.named_parameters(), graph_module.named_buffers())
            }
            with _reparametrize_module(graph_module, meta):
                _CountingShapeProp(graph_module).propagate(example_input.to("meta"))
        except Exception:  # an op without a meta kernel
            try:
                fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
                _CountingShapeProp(graph_module, fake_mode=fake_mode).propagate(example_input)
            except Exception:  # nor a fake one: do the arithmetic
                _CountingShapeProp(graph_module).propagate(example_input)


class _CountingShapeProp(ShapeProp):
    """Shape propagation that also records each node's MACs in ``node.meta["macs"]``, and the value
    of every number (or tuple of ints) a node gives, e.g. a size read from a shape, in
    ``node.meta["value"]``."""

    def run_node(self, n: fx.Node):
        with counting_macs() as counter:
            result = super().run_node(n)
        n.meta["macs"] = counter.total
        if _is_number(result):
            n.meta["value"] = tuple(result) if isinstance(result, tuple) else result
        return result


def _is_number(value) -> bool:
    if isinstance(value, tuple):
        return all(isinstance(v, int) for v in value)
    return isinstance(value, (int, float))
