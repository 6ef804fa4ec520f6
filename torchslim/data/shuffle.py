"""Epoch-seeded shuffling, so a resumed run sees the same batches.

A ``DataLoader(shuffle=True)`` draws its permutation from a generator whose
state moves on every epoch; resuming would need that state too. Instead the
order of epoch ``e`` is a pure function of ``(seed, e)``: build the loader with
``sampler=EpochShuffleSampler(dataset, seed=seed)`` and
the trainer (:func:`torchslim.engine.train_one_epoch`) calls ``sampler.set_epoch(epoch)``
before iterating (``DistributedSampler`` works the same way).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler

_MASK_63 = (1 << 63) - 1


def seeded_generator(seed: int, epoch: int = 0) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, epoch)``."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + 1) & _MASK_63
    return torch.Generator().manual_seed(mixed)


class EpochShuffleSampler(Sampler[int]):
    """Random permutation of ``range(len(data_source))``, reproducible per epoch."""

    def __init__(self, data_source: Sized | int, *, seed: int = 0) -> None:
        self.num_samples = data_source if isinstance(data_source, int) else len(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.num_samples, generator=seeded_generator(self.seed, self.epoch))
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_samples
