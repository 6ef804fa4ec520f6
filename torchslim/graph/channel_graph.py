"""What tracing finds: every call of a layer pruning resizes, and the channel ids it reads and writes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .labels import ChannelIds

DENSE_ROLES = ("conv", "linear")  # layers with both input (weight axis 1) and output (axis 0) channels


@dataclass
class LayerUse:
    """One call of a layer that pruning resizes or that costs MACs."""

    module: str
    role: str  # "conv" | "linear" | "depthwise" | "norm" | "fixed"
    in_ids: np.ndarray | None  # raw ids of the input channel positions (conv/linear/depthwise/norm)
    out_ids: np.ndarray | None  # raw ids of the output channel positions (conv/linear)
    macs_factor: int = 0  # MACs = factor * in_channels/groups * out_channels (depthwise: factor * channels)
    base_macs: int = 0
    inference: bool = True  # False for layers that run only in training (auxiliary heads): no inference MACs


@dataclass
class ChannelGraph:
    """Channel ids, their couplings and blocks, and every layer use."""

    ids: ChannelIds
    uses: list[LayerUse] = field(default_factory=list)
    sources: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> its output channel ids
    # fx node name (and layer name) -> class of the module whose forward holds it, for messages
    owners: dict[str, str] = field(default_factory=dict)

    def uses_of(self, *roles: str) -> Iterator[LayerUse]:
        """The layer uses of the given roles, in the order they run."""
        return (use for use in self.uses if use.role in roles)

    def consumers(self) -> Iterator[LayerUse]:
        """Every call of a conv / linear layer whose input channels tracing could follow."""
        return (use for use in self.uses_of(*DENSE_ROLES) if use.in_ids is not None)
