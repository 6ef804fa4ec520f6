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

import torch
import torch.fx as fx
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils.stateless import _reparametrize_module

from torchslim.errors import PruningError
from torchslim.nn import eval_mode, train_mode

from .channel_graph import ChannelGraph
from .layer_rules import hidden_layer_uses, timm_tracer
from .tracer import ChannelTracer


def trace_channels(model: nn.Module, example_input: torch.Tensor) -> tuple[ChannelGraph, fx.GraphModule]:
    """Trace ``model`` on ``example_input`` and return its channel graph."""
    graph_module, inference_layers = _symbolic_trace(model)
    try:
        _propagate_shapes(model, graph_module, example_input[:1])
    except Exception as error:
        if inference_layers is None:
            raise _cannot_run(model, example_input, error) from None
        raise _train_only_layers_cannot_run(
            model, graph_module, inference_layers, example_input, error
        ) from None
    graph = ChannelTracer(model, graph_module).run()
    if inference_layers is not None:
        for use in graph.uses:
            use.inference = use.module in inference_layers
    graph.uses.extend(hidden_layer_uses(model, graph_module, example_input[:1]))
    return graph, graph_module


def _cannot_run(model: nn.Module, example_input: torch.Tensor, error: Exception) -> PruningError:
    return PruningError(
        f"cannot run {type(model).__name__} on input {tuple(example_input.shape)}: {_root(error)}"
    )


def _root(error: BaseException) -> str:
    """The first line of the error that started ``error`` (shape propagation wraps it in its own)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _train_only_layers_cannot_run(
    model: nn.Module,
    graph_module: fx.GraphModule,
    inference_layers: set[str],
    example_input,
    error: Exception,
) -> PruningError:
    """Pruning on the eval graph alone would leave the training-only layers (an auxiliary head)
    unresized, and the pruned model would fail in training: refuse and say which size to use."""
    called = [str(n.target) for n in graph_module.graph.nodes if n.op == "call_module"]
    train_only = sorted({name.split(".")[0] for name in called if name not in inference_layers})
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
            graph_module = _trace(model)
        with eval_mode(model):
            inference = _called_layers(_trace(model))
        return graph_module, inference
    except Exception:  # fx raises many types for untraceable Python
        try:
            return _trace(model), None
        except Exception as error:
            raise PruningError(
                f"cannot trace {type(model).__name__} with torch.fx: {type(error).__name__}: {error}"
            ) from None


def _trace(model: nn.Module) -> fx.GraphModule:
    """torch.fx's trace; failing that, with the modules and functions timm marks as untraceable kept
    whole (when timm is loaded): their channels are then blocked, named, instead of the whole model."""
    try:
        return fx.symbolic_trace(model)
    except Exception:
        tracer = timm_tracer()
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
    """Record every node's output shape without doing the arithmetic.

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
                ShapeProp(graph_module).propagate(example_input.to("meta"))
        except Exception:  # an op without a meta kernel
            try:
                fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
                ShapeProp(graph_module, fake_mode=fake_mode).propagate(example_input)
            except Exception:  # nor a fake one: do the arithmetic
                ShapeProp(graph_module).propagate(example_input)
