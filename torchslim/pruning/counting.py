"""Counting: MACs (multiply-accumulates of conv and linear layers), parameters and fp32 size.

MACs are counted for one image (batch 1) at the given input size. Conv and
linear layers only, as in PaddleSlim 2.x and most papers; batch norm, activations
and pooling are not counted. "FLOPs" in configs means these MACs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

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


def conv_macs(conv: nn.modules.conv._ConvNd, output_shape: torch.Size) -> int:
    """Each output element costs (in_channels / groups) x kernel-area multiply-adds."""
    kernel = 1
    for k in conv.kernel_size:
        kernel *= k
    per_output = (conv.in_channels // conv.groups) * kernel
    return int(output_shape[1:].numel()) * per_output


def linear_macs(linear: nn.Linear, output_shape: torch.Size) -> int:
    return int(output_shape[1:].numel()) * linear.in_features


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
    """Run one forward pass on a zero image and record every conv/linear layer's cost."""
    layers: list[LayerCost] = []

    def record(name: str, module: nn.Module, _inputs, output: torch.Tensor) -> None:
        if isinstance(module, nn.modules.conv._ConvNd):
            macs, kind = conv_macs(module, output.shape), "conv"
            if module.groups > 1:
                kind = "depthwise" if module.groups == module.in_channels else "grouped conv"
        else:
            macs, kind = linear_macs(module, output.shape), "linear"
        params = sum(p.numel() for p in module.parameters(recurse=False))
        layers.append(LayerCost(name, kind, macs, params, tuple(output.shape[1:])))

    zero_image_pass(model, (nn.modules.conv._ConvNd, nn.Linear), record, input_size, in_channels)
    return Profile(
        input_size=input_size,
        macs=sum(layer.macs for layer in layers),
        params=count_params(model),
        size_bytes=model_size_bytes(model),
        layers=layers,
    )


def human(number: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(number) >= threshold:
            return f"{number / threshold:.2f}{suffix}{unit}"
    return f"{number:.0f}{unit}"
