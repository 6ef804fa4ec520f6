"""Tiny models whose forwards compute sizes from tensor shapes, the way timm's CaiT, CoaT, CrossViT
(an attention class the tracer does not know: heads by ``C // num_heads`` from the input's width),
PVT-style token/image reshapes and DaViT's crop back to the unpadded size write them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HeadsFromWidth(nn.Module):
    """Multi-head attention whose head size is read from its input's width (timm CaiT's ClassAttn /
    TalkingHeadAttn, CoaT's factor attention): narrowing the input breaks the qkv reshape."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * 0.25).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class TokenBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = HeadsFromWidth(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyCaiT(nn.Module):
    """Patch embedding, two blocks of width-read attention and an MLP, mean over tokens, classifier."""

    def __init__(self, dim: int = 16, heads: int = 2, hidden: int = 96):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(TokenBlock(dim, heads, hidden), TokenBlock(dim, heads, hidden))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.blocks(self.patch(x).flatten(2).transpose(1, 2))
        return self.fc(self.norm(x).mean(1))


class TokensToImage(nn.Module):
    """Tokens back to an image by their own width and the image's size (PVT / CoaT's conv position
    encoding), a depthwise conv on the image, and back to tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x, size: tuple[int, int]):
        B, N, C = x.shape
        image = x.transpose(1, 2).reshape(B, C, size[0], size[1])
        return x + self.dw(image).flatten(2).transpose(1, 2)


class TinyPVT(nn.Module):
    def __init__(self, dim: int = 16, hidden: int = 32):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.pos = TokensToImage(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.fc = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x)
        size = x.shape[2:]
        x = self.pos(x.flatten(2).transpose(1, 2), size)
        return self.fc((x + self.mlp(x)).mean(1))


class PadAndCrop(nn.Module):
    """Pad the image up to a multiple of the window, work on it, crop back to the size read before
    padding (DaViT's and Swin's windows; HaloNet's relative logits)."""

    def __init__(self, channels: int, window: int = 3):
        super().__init__()
        self.window = window
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        H, W = x.shape[2], x.shape[3]
        padded = F.interpolate(x, size=(H + (-H) % self.window, W + (-W) % self.window))
        return F.relu(self.bn(self.conv(padded)))[:, :, :H, :W]


class PadCropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = PadAndCrop(16)
        self.out = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.out(self.block(self.stem(x))).mean((2, 3)))


class SliceToWidth(nn.Module):
    """Keeps as many channels of one branch as another branch has: an int read from a width."""

    def __init__(self):
        super().__init__()
        self.wide = nn.Conv2d(3, 16, 3, padding=1)
        self.narrow = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        narrow = F.relu(self.narrow(x))
        return self.fc((self.wide(x)[:, : narrow.shape[1]] + narrow).mean((2, 3)))


class TinyGlu(nn.Module):
    """A packed gated MLP (timm's GluMlp / SwiGLU): one linear emits gate and value, chunked in two,
    with a scale read from the hidden width (a float, not an int)."""

    def __init__(self, dim: int = 16, hidden: int = 32):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.fc = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc(self.fc2(F.silu(gate) * value).mean(1))


class WidthScaled(nn.Module):
    """Attention-style scaling by the inverse square root of a width it reads: a float from a shape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = F.relu(self.conv(x))
        return self.fc(y.mean((2, 3)) * y.shape[1] ** -0.5)


class QuarterRows(nn.Module):
    """Rows of a quarter of the width each, the rest of the tensor on the last axis: pruning the
    width would not keep it a multiple of four."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        y = F.relu(self.conv(x))
        b, c = y.shape[0], y.shape[1]
        return self.fc(y.view(b, c // 4, -1).mean(-1))


class Attention(nn.Module):
    """A model's own attention class that shares timm's class name (LeViT's: a norm inside its qkv
    layer, so no ``qkv.out_features``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_heads = 2
        self.qkv = nn.Sequential(nn.Linear(dim, 3 * dim), nn.BatchNorm1d(3 * dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv[0](x).chunk(3, dim=-1)
        return self.proj((q @ k.transpose(-2, -1)).softmax(-1) @ v)


Attention.__module__ = "timm.models.levit_like"  # what the tracer keys timm's attention on


class LookalikeAttentionNet(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.attn = Attention(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.fc = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.attn(x)
        return self.fc((x + self.mlp(x)).mean(1))


class UpsampleToInput(nn.Module):
    """A coarse branch resized to the fine one's spatial size, passed whole (``x.shape[-2:]``, as
    timm's MViTv2 hands ``feat_size`` on): a size, but no width."""

    def __init__(self):
        super().__init__()
        self.fine = nn.Conv2d(3, 16, 3, padding=1)
        self.coarse = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.fc = nn.Linear(40, 10)

    def forward(self, x):
        fine = F.relu(self.fine(x))
        coarse = F.interpolate(F.relu(self.coarse(fine)), size=fine.shape[-2:])
        return self.fc(torch.cat([fine, coarse], dim=1).mean((2, 3)))
