"""Epoch-seeded shuffling: the order depends on the seed and the epoch only."""

from __future__ import annotations

import torch

from torchslim.engine import (
    EpochShuffleSampler,
    seeded_generator,
)


def test_epoch_shuffle_depends_only_on_seed_and_epoch():
    sampler = EpochShuffleSampler(50, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and len(sampler) == 50
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    again = EpochShuffleSampler(range(50), seed=3)
    again.set_epoch(1)
    assert list(again) == second
    a, b = seeded_generator(3, 1), seeded_generator(3, 2)
    assert not torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
