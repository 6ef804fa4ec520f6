"""Run the unpruned and the pruned model side by side, node by node, over a fixed set of images.

Reconstruction refits the layers in the order they run, and each refit must see inputs that the
layers before it already corrected. Re-running the network up to every layer costs one forward
pass per layer; stepping both traced graphs together costs one pass in all: every node runs on
every image chunk before the next node starts, so at a refitted layer its pruned inputs and its
unpruned outputs are at hand for all images, and the layer runs forward only after its refit.
The price is memory: the live tensors of both graphs are held for all images at once, which is
why :meth:`Lockstep.image_cost` exists (the caller sizes the image set with it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from torchslim.errors import PruningError
from torchslim.graph.trace import symbolic_trace
from torchslim.nn import eval_mode


@dataclass
class LayerStop:
    """A refitted layer reached: its pruned inputs and unpruned outputs, one pair per image chunk.

    The layer runs forward (in the pruned graph) when the iteration resumes, so weights written
    into it before then are the ones every later layer sees."""

    name: str
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    norm: str | None  # the batch norm that reads only this layer's output, in the pruned graph


def trace_for_stepping(model: nn.Module) -> fx.GraphModule:
    """The eval-mode graph of ``model`` as pruning traces it (attention layers are single calls);
    it shares the model's modules and parameters."""
    try:
        with eval_mode(model):
            return symbolic_trace(model)
    except Exception as error:  # fx raises many types for untraceable Python
        raise PruningError(
            f"cannot trace {type(model).__name__} with torch.fx for reconstruction: {type(error).__name__}: "
            f"{error}"
        ) from None


class Lockstep:
    """The two graphs and the chunks they run on; :meth:`stops` walks them (see the module docstring)."""

    def __init__(self, original: nn.Module, pruned: nn.Module) -> None:
        self.original, self.pruned = trace_for_stepping(original), trace_for_stepping(pruned)
        self.nodes = list(self.pruned.graph.nodes)
        self.twins = list(self.original.graph.nodes)
        if [(n.op, str(n.target)) for n in self.nodes] != [(n.op, str(n.target)) for n in self.twins]:
            raise PruningError("the pruned and the unpruned model trace to different graphs")
        self._freed_after = _last_uses(self.nodes)

    def _steps(self, chunks: list[torch.Tensor]) -> Iterator[tuple[int, list[_Env], list[_Env]]]:
        """Before each node: its index and both graphs' chunk states; after it, run it and free what died.

        The node runs in the unpruned graph before the caller sees the states, and in the pruned
        graph after, so the caller can rewrite a pruned layer between seeing its input and running it."""
        pruned_envs = [_Env(self.pruned, chunk) for chunk in chunks]
        original_envs = [_Env(self.original, chunk) for chunk in chunks]
        for index, (node, twin) in enumerate(zip(self.nodes, self.twins, strict=True)):
            if node.op == "output":
                return
            for env in original_envs:
                env.run(twin)
            yield index, pruned_envs, original_envs
            for env in pruned_envs:
                env.run(node)
            dead = self._freed_after.get(index, ())
            for env in pruned_envs:
                env.release([self.nodes[i] for i in dead])
            for env in original_envs:
                env.release([self.twins[i] for i in dead])

    def stops(self, chunks: list[torch.Tensor], layers: set[str]) -> Iterator[LayerStop]:
        """Run both graphs over ``chunks``, pausing at the first call of each module named in ``layers``."""
        seen: set[str] = set()
        for index, pruned_envs, original_envs in self._steps(chunks):
            node = self.nodes[index]
            if node.op != "call_module" or node.target not in layers or node.target in seen:
                continue
            seen.add(node.target)
            yield LayerStop(
                node.target,
                [env.argument(node) for env in pruned_envs],
                [env.value(self.twins[index]) for env in original_envs],
                _norm_reading(node, self.pruned),
            )

    def image_cost(self, image: torch.Tensor) -> ImageCost:
        """What stepping one image costs: the most bytes both graphs hold at once (activations only),
        and the multiply-adds of both models' convolutions and linear layers."""
        peak = 0
        for _, pruned_envs, original_envs in self._steps([image[:1]]):
            peak = max(peak, pruned_envs[0].bytes() + original_envs[0].bytes())
        return ImageCost(
            peak, _forward_macs(self.original, image[:1]) + _forward_macs(self.pruned, image[:1])
        )


@dataclass(frozen=True)
class ImageCost:
    live_bytes: int
    macs: int


def _forward_macs(model: nn.Module, image: torch.Tensor) -> int:
    """Multiply-adds of the convolutions and linear layers in one forward pass of ``model``."""
    total = 0

    def count(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.weight[0].numel()

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [layer.register_forward_hook(count) for layer in layers]
    try:
        model(image)
    finally:
        for handle in handles:
            handle.remove()
    return total


class _Env:
    """One chunk's values in one graph: an fx interpreter stepped by hand."""

    def __init__(self, graph_module: fx.GraphModule, chunk: torch.Tensor) -> None:
        self.interpreter = fx.Interpreter(graph_module, garbage_collect_values=False)
        self.interpreter.args_iter = iter([chunk])

    def run(self, node: fx.Node) -> None:
        self.interpreter.env[node] = self.interpreter.run_node(node)

    def value(self, node: fx.Node) -> torch.Tensor:
        return self.interpreter.env[node]

    def argument(self, node: fx.Node) -> torch.Tensor:
        first = node.args[0]
        if not isinstance(first, fx.Node):
            raise PruningError(f"layer {node.target} is called on a constant")
        return self.interpreter.env[first]

    def release(self, nodes: list[fx.Node]) -> None:
        for node in nodes:
            self.interpreter.env.pop(node, None)

    def bytes(self) -> int:
        return sum(_tensor_bytes(v) for v in self.interpreter.env.values())


def _tensor_bytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, list | tuple):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _last_uses(nodes: list[fx.Node]) -> dict[int, tuple[int, ...]]:
    """For each node's index, the indices of the values whose last reader it is (freed once it ran)."""
    position = {node: index for index, node in enumerate(nodes)}
    last_reader: dict[int, int] = {}
    for index, node in enumerate(nodes):
        for source in node.all_input_nodes:
            last_reader[position[source]] = index
    freed: dict[int, list[int]] = {}
    for value, reader in last_reader.items():
        freed.setdefault(reader, []).append(value)
    return {reader: tuple(values) for reader, values in freed.items()}


def _norm_reading(node: fx.Node, graph_module: fx.GraphModule) -> str | None:
    """The batch norm module that is the first reader of ``node``'s output, if there is one."""
    for user in node.users:
        if user.op == "call_module" and user.args and user.args[0] is node:
            module = graph_module.get_submodule(user.target)
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                return user.target
    return None
