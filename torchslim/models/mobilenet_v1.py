"""MobileNetV1 (Howard et al., 2017), written so that every layer is easy to name and prune.

The body is a table of (output channels, stride) for the 13 depthwise-separable
blocks; ``channels`` overrides the per-block pointwise widths, which is how a
pruned architecture is rebuilt from its manifest.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

# (pointwise output channels, depthwise stride) of the paper's 13 blocks.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
STEM_CHANNELS = 32


class ConvBNReLU(nn.Sequential):
    """conv -> batch norm -> ReLU; ``groups=in_channels`` makes it depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv then 1x1 pointwise conv, each with BN and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.depthwise = ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvBNReLU(in_channels, out_channels, 1, 1)


class MobileNetV1(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        channels: Sequence[int] | None = None,
        stem_channels: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        widths = list(channels) if channels is not None else [_scaled(c, width_mult) for c, _ in BLOCKS]
        if len(widths) != len(BLOCKS):
            raise ValueError(f"MobileNetV1 needs {len(BLOCKS)} block widths, got {len(widths)}")
        stem = stem_channels if stem_channels is not None else _scaled(STEM_CHANNELS, width_mult)
        layers: list[nn.Module] = [ConvBNReLU(3, stem, 3, 2)]
        in_channels = stem
        for width, (_, stride) in zip(widths, BLOCKS, strict=True):
            layers.append(DepthwiseSeparable(in_channels, width, stride))
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


def _scaled(channels: int, width_mult: float) -> int:
    return max(8, int(round(channels * width_mult)))


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


# Stage names of the seed (PaddleSlim) MobileNetV1, block by block.
SEED_BLOCK_NAMES = (
    "conv2_1",
    "conv2_2",
    "conv3_1",
    "conv3_2",
    "conv4_1",
    "conv4_2",
    "conv5_1",
    "conv5_2",
    "conv5_3",
    "conv5_4",
    "conv5_5",
    "conv5_6",
    "conv6",
)


def seed_names(model: nn.Module) -> dict[str, str]:
    """PyTorch parameter name -> the seed's name (``conv2_1_sep_weights`` ...)."""
    names: dict[str, str] = {}
    _conv_bn_names(names, "features.0", "conv1")
    for index, seed in enumerate(SEED_BLOCK_NAMES, start=1):
        _conv_bn_names(names, f"features.{index}.depthwise", f"{seed}_dw")
        _conv_bn_names(names, f"features.{index}.pointwise", f"{seed}_sep")
    names["fc.weight"] = "fc7_weights"
    names["fc.bias"] = "fc7_offset"
    return names


def _conv_bn_names(names: dict[str, str], prefix: str, seed: str) -> None:
    names[f"{prefix}.conv.weight"] = f"{seed}_weights"
    names[f"{prefix}.bn.weight"] = f"{seed}_bn_scale"
    names[f"{prefix}.bn.bias"] = f"{seed}_bn_offset"
