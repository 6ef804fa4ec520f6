"""Normalisation constants and the train/val preprocessing presets.

Decoded-image datasets (ImageNet lists, class folders) use torchvision's PIL
pipeline; in-memory datasets (Fashion-MNIST, CIFAR-10) are resized once with
:func:`resize_uint8` and augmented per sample on tensors, which is much faster.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

Stats = tuple[tuple[float, ...], tuple[float, ...]]

IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR10_STATS: Stats = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
# Single-channel statistics; the images are repeated to three channels afterwards.
FASHION_MNIST_STATS: Stats = ((0.2860,), (0.3530,))

_RESIZE_CHUNK = 4096  # images per interpolate call


def imagenet_train_transform(image_size: int, stats: Stats = IMAGENET_STATS) -> Callable:
    """RandomResizedCrop + horizontal flip, the usual ImageNet training preset."""
    mean, std = stats
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def imagenet_eval_transform(image_size: int, stats: Stats = IMAGENET_STATS) -> Callable:
    """Resize the short side to size*256/224, then center-crop: the usual ImageNet eval preset."""
    mean, std = stats
    return v2.Compose(
        [
            v2.Resize(round(image_size * 256 / 224), antialias=True),
            v2.CenterCrop(image_size),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear-resize a uint8 (N, C, H, W) batch to (N, C, size, size), staying uint8.

    torch's native uint8 kernel is about twice as fast as a float round trip;
    antialiasing only matters when shrinking (it equals plain bilinear when
    enlarging). Chunks keep the kernel's scratch memory small.
    """
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        out[start : start + _RESIZE_CHUNK] = F.interpolate(
            images[start : start + _RESIZE_CHUNK].contiguous(),
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    return out
