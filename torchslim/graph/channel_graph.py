"""What tracing finds: every call of a layer pruning resizes, and the channel ids it reads and writes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .labels import ChannelIds

DENSE_ROLES = ("conv", "linear")  # layers with both input (weight axis 1) and output (axis 0) channels
# Uses that only cost MACs, recorded for a graph node rather than a layer: "product" (a matrix
# product whose MACs scale with the kept channels it reads) and "node" (a fixed cost).
NODE_ROLES = ("product", "node")
# Uses whose weight's axis 1 reads input channels: what the oracle zeroes and criteria score.
CONSUMER_ROLES = (*DENSE_ROLES, "attention")


def layer_weight(module: nn.Module) -> torch.Tensor | None:
    """The weight whose axis 0 holds a layer's output channels and axis 1 its input channels."""
    if isinstance(module, nn.MultiheadAttention):
        return module.in_proj_weight
    return getattr(module, "weight", None)


@dataclass
class LayerUse:
    """One call of a layer that pruning resizes or that costs MACs."""

    module: str
    role: str  # conv | linear | attention | depthwise | norm | layer_norm | fixed | product | node
    in_ids: np.ndarray | None  # raw ids of the input channel positions (conv/linear/depthwise/norm)
    out_ids: np.ndarray | None  # raw ids of the output channel positions (conv/linear)
    macs_factor: int = 0  # MACs = factor * in_channels/groups * out_channels (depthwise, product: x channels)
    base_macs: int = 0
    inference: bool = True  # False for layers that run only in training (auxiliary heads): no inference MACs


@dataclass
class TensorSlice:
    """A model tensor (class token, position embedding, layer scale) whose ``axis`` holds channels."""

    target: str  # qualified name, e.g. "encoder.pos_embedding"
    axis: int
    ids: np.ndarray


@dataclass
class WidthAttribute:
    """A module attribute the forward reads as a width (torchvision ViT's ``hidden_dim``)."""

    module: str
    attribute: str
    ids: np.ndarray


@dataclass
class ChannelGraph:
    """Channel ids, their couplings and blocks, and every layer use."""

    ids: ChannelIds
    uses: list[LayerUse] = field(default_factory=list)
    sources: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> its output channel ids
    tensor_slices: list[TensorSlice] = field(default_factory=list)
    widths: list[WidthAttribute] = field(default_factory=list)
    head_layers: set[str] = field(default_factory=set)  # layers whose output units are attention heads
    # fx node name (and layer name) -> class of the module whose forward holds it, for messages
    owners: dict[str, str] = field(default_factory=dict)

    def uses_of(self, *roles: str) -> Iterator[LayerUse]:
        """The layer uses of the given roles, in the order they run."""
        return (use for use in self.uses if use.role in roles)

    def consumers(self) -> Iterator[LayerUse]:
        """Every call of a conv / linear / attention layer whose input channels tracing could follow."""
        return (use for use in self.uses_of(*CONSUMER_ROLES) if use.in_ids is not None)
