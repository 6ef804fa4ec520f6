"""Counting: MACs (multiply-accumulates of convolutions and matrix products), parameters and fp32 size.

MACs are counted for one image (batch 1) at the given input size: conv and linear
layers and every matrix product (attention's projections, q.kT and weights.v,
``@``, ``bmm``, ``einsum``, ``F.scaled_dot_product_attention``), as torchvision's
published GFLOPS count them. Norms, activations, softmax and pooling are not
counted. "FLOPs" in configs means these MACs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from torchslim.graph.macs import counting_macs
from torchslim.nn import zero_image_pass


@dataclass
class LayerCost:
    name: str
    kind: str
    macs: int
    params: int
    output_shape: tuple[int, ...]


@dataclass
class Profile:
    input_size: int
    macs: int
    params: int
    size_bytes: int
    layers: list[LayerCost] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "macs": self.macs,
            "params": self.params,
            "size_bytes": self.size_bytes,
        }


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and floating-point buffers stored as fp32."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    return sum(t.numel() * 4 for t in tensors)


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and output features of every linear layer, in module order."""
    counts = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            counts[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            counts[name] = module.out_features
    return counts


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def profile_model(model: nn.Module, input_size: int = 224, in_channels: int = 3) -> Profile:
    """Run one forward pass on a zero image and record the MACs of every layer that multiplies.

    Each conv / matrix-product op is charged to the innermost module running it: a conv or linear
    layer, or the module that calls ``F.linear``, ``@`` or attention itself (nn.MultiheadAttention).
    """
    calls = _ModuleCalls(model)
    with calls, counting_macs(calls.charge):
        zero_image_pass(model, (), _ignore, input_size, in_channels)
    return Profile(
        input_size=input_size,
        macs=sum(layer.macs for layer in calls.layers),
        params=count_params(model),
        size_bytes=model_size_bytes(model),
        layers=calls.layers,
    )


def _ignore(*_args) -> None:
    return None


class _ModuleCalls:
    """Tracks which module is running (hooks on every module) and collects each call's MACs."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.stack: list[list] = []  # [name, module, macs] of the running calls, innermost last
        self.layers: list[LayerCost] = []
        self.handles: list = []

    def __enter__(self) -> _ModuleCalls:
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name)))
            self.handles.append(module.register_forward_hook(self._leave, always_call=True))
        return self

    def __exit__(self, *_exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _enter(self, name: str):
        def hook(module: nn.Module, _inputs) -> None:
            self.stack.append([name, module, 0])

        return hook

    def _leave(self, module: nn.Module, _inputs, output) -> None:
        name, running, macs = self.stack.pop()
        if macs and running is module:
            params = sum(p.numel() for p in module.parameters(recurse=False))
            first = output[0] if isinstance(output, (tuple, list)) else output
            shape = tuple(first.shape[1:]) if isinstance(first, torch.Tensor) else ()
            self.layers.append(LayerCost(name, layer_kind(module), macs, params, shape))

    def charge(self, macs: int) -> None:
        if self.stack:
            self.stack[-1][2] += macs


def layer_kind(module: nn.Module) -> str:
    """What a layer that costs MACs is, for tables."""
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups == 1:
            return "conv"
        return "depthwise" if module.groups == module.in_channels else "grouped conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower():
        return "attention"
    return "matmul"


def human(number: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(number) >= threshold:
            return f"{number / threshold:.2f}{suffix}{unit}"
    return f"{number:.0f}{unit}"
