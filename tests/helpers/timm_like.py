"""Tiny modules written the way timm writes its layers (functional calls in re-implemented forwards,
GhostNet's concatenate-and-slice), for the tracer's op rules and the refusal explanations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import Head, conv_bn


class FunctionalLinear(nn.Linear):
    """A Linear whose forward is its own functional call (timm.layers.Linear)."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class NormAct(nn.BatchNorm2d):
    """Batch norm + activation in one module, asserting the input rank first (timm's BatchNormAct2d)."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x):
        torch._assert(x.ndim == 4, "expected a 4D input")
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.1)
        return self.act(x)


class FunctionalLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.n1 = NormAct(16)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.n2 = NormAct(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = FunctionalLinear(32, 24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.n2(self.c2(self.n1(self.c1(x))))
        return self.fc(F.relu(self.hidden(torch.flatten(self.pool(x), 1))))


class Ghost(nn.Module):
    """GhostNet's module: half the channels from a conv, half from a cheap depthwise conv of them,
    concatenated and sliced to ``keep`` channels."""

    def __init__(self, cin: int, cout: int, keep: int | None = None):
        super().__init__()
        self.primary = conv_bn(cin, cout // 2, 1)
        self.cheap = nn.Sequential(nn.Conv2d(cout // 2, cout // 2, 3, padding=1, groups=cout // 2), nn.ReLU())
        self.keep = cout if keep is None else keep

    def forward(self, x):
        x1 = self.primary(x)
        out = torch.cat([x1, self.cheap(x1)], dim=1)
        return out[:, : self.keep]


class GhostNet(nn.Module):
    def __init__(self, keep: int | None = None):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.blocks = nn.Sequential(
            Ghost(16, 32, keep), Ghost(keep or 32, 32, keep), Ghost(keep or 32, 32, keep)
        )
        self.head = Head(keep or 32)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class ScaledStdConv(nn.Conv2d):
    """A weight-standardised conv with a per-output-channel gain (timm's ScaledStdConv2d, NFNets)."""

    def __init__(self, cin: int, cout: int, k: int = 3, groups: int = 1):
        super().__init__(cin, cout, k, padding=k // 2, groups=groups)
        self.gain = nn.Parameter(torch.rand(cout, 1, 1, 1) + 0.5)
        self.scale = self.weight[0].numel() ** -0.5

    def forward(self, x):
        flat = self.weight.reshape(1, self.out_channels, -1)
        weight = F.batch_norm(flat, None, None, weight=(self.gain * self.scale).view(-1), training=True)
        weight = weight.reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class StandardisedNet(nn.Module):
    """stem -> weight-standardised conv -> depthwise weight-standardised conv -> plain conv -> head."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.ws = ScaledStdConv(16, 32)
        self.dw = ScaledStdConv(32, 32, groups=32)
        self.plain = conv_bn(32, 24)
        self.head = Head(24)

    def forward(self, x):
        return self.head(self.plain(F.relu(self.dw(F.relu(self.ws(self.stem(x)))))))


class MeanVarStdConv(nn.Conv2d):
    """Weight standardisation written out with var_mean over the input axes (as BiT's code does)."""

    def forward(self, x):
        var, mean = torch.var_mean(self.weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(var + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class FlippedConv(nn.Conv2d):
    """A conv whose weight transform mixes output channels (reversed): not a per-channel transform."""

    def forward(self, x):
        return F.conv2d(x, self.weight.flip(0), self.bias, self.stride, self.padding)


class TransformedNet(nn.Module):
    def __init__(self, kind: type[nn.Conv2d]):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.odd = kind(16, 32, 3, padding=1)
        self.plain = conv_bn(32, 24)
        self.head = Head(24)

    def forward(self, x):
        return self.head(self.plain(F.relu(self.odd(self.stem(x)))))
