"""Conv and linear layers as the runtime sees them: shapes and channel counts."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from torchslim.nn import zero_image_pass


@dataclass(frozen=True)
class ConvConfig:
    """One conv (or linear, as a 1x1 conv on a 1x1 map) as the runtime sees it."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    height: int  # input spatial size
    width: int
    batch: int = 1
    linear: bool = False  # an nn.Linear (ONNX Gemm) on (batch, in_channels) rather than a conv

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def key(self) -> str:
        return (
            f"c{self.in_channels}x{self.out_channels}k{self.kernel}s{self.stride}g{self.groups}"
            f"h{self.height}w{self.width}b{self.batch}" + ("L" if self.linear else "")
        )

    def with_channels(self, in_channels: int, out_channels: int) -> ConvConfig:
        """The same layer at other channel counts (a depthwise conv keeps one group per channel)."""
        if self.depthwise:
            return replace(self, in_channels=in_channels, out_channels=in_channels, groups=in_channels)
        return replace(self, in_channels=in_channels, out_channels=out_channels)


def layer_configs(model: nn.Module, input_size: int, batch: int = 1) -> dict[str, ConvConfig]:
    """Every conv and linear layer of ``model`` as a :class:`ConvConfig` (one forward pass on zeros)."""
    configs: dict[str, ConvConfig] = {}

    def record(name: str, module: nn.Module, inputs: tuple, _output) -> None:
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            configs[name] = ConvConfig(
                module.in_channels,
                module.out_channels,
                module.kernel_size[0],
                module.stride[0],
                module.groups,
                int(x.shape[-2]),
                int(x.shape[-1]),
                batch,
            )
        else:
            configs[name] = ConvConfig(
                module.in_features, module.out_features, 1, 1, 1, 1, 1, batch, linear=True
            )

    zero_image_pass(model, (nn.Conv2d, nn.Linear), record, input_size)
    return configs


def layer_module(config: ConvConfig) -> nn.Module:
    """A one-layer model with ``config``'s shapes (a conv is followed by a ReLU, as in a network)."""
    if config.linear:
        return nn.Linear(config.in_channels, config.out_channels)
    conv = nn.Conv2d(
        config.in_channels,
        config.out_channels,
        config.kernel,
        config.stride,
        config.kernel // 2,
        groups=config.groups,
        bias=True,
    )
    return nn.Sequential(conv, nn.ReLU())
