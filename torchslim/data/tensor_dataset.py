"""A dataset over an in-memory uint8 image tensor, with cheap tensor-side augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from torchslim.data.transforms import Stats


class TensorImageDataset(Dataset):
    """Images already resized to their final size, normalised when fetched.

    ``images`` is uint8 (N, C, S, S); single-channel images are repeated to
    ``out_channels``. Training augmentation is a random crop after zero padding
    by ``crop_padding`` pixels and, when ``hflip``, a random horizontal flip.

    DataLoader fetches whole batches through ``__getitems__``, so augmentation
    and normalisation run vectorised over a batch instead of per sample.
    Randomness comes from torch's RNG, which DataLoader seeds per worker from
    the loader's generator; with ``num_workers=0`` it is the global RNG.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        stats: Stats,
        *,
        crop_padding: int = 0,
        hflip: bool = False,
        out_channels: int = 3,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")
        mean, std = stats
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"stats for {len(mean)} channels given for {images.shape[1]}-channel images")
        self.images = images
        self.labels = labels.to(torch.int64)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.out_channels = out_channels

    def __len__(self) -> int:
        return self.images.shape[0]

    def _random_crop(self, batch: torch.Tensor) -> torch.Tensor:
        """Per-image random crop of the zero-padded batch back to its own size, via gather indices."""
        pad = self.crop_padding
        count, _, height, width = batch.shape
        padded = F.pad(batch, (pad, pad, pad, pad))
        top = torch.randint(0, 2 * pad + 1, (count, 1))
        left = torch.randint(0, 2 * pad + 1, (count, 1))
        rows = (top + torch.arange(height)).view(count, 1, height, 1)
        cols = (left + torch.arange(width)).view(count, 1, 1, width)
        images = torch.arange(count).view(count, 1, 1, 1)
        channels = torch.arange(batch.shape[1]).view(1, -1, 1, 1)
        return padded[images, channels, rows, cols]

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        if self.crop_padding > 0:
            batch = self._random_crop(batch)
        if self.hflip:
            flip = torch.rand(batch.shape[0]) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        batch = (batch.float().div_(255) - self._mean) / self._std
        if batch.shape[1] != self.out_channels:
            batch = batch.expand(-1, self.out_channels, -1, -1)
        return batch

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        batch = self._prepare(self.images[index])
        return list(zip(batch.unbind(0), self.labels[index].tolist(), strict=True))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]
