"""Batches cached once for repeated evaluation: exactly the first samples."""

from __future__ import annotations

import pytest
import torch

from torchslim.engine.cached import cache_batches
from torchslim.errors import PruningError


def test_cache_batches_takes_exactly_the_first_samples():
    data = [(torch.full((10, 1), float(i)), torch.arange(10) + 10 * i) for i in range(5)]
    batches = cache_batches(data, 25, "cpu")
    assert [len(t) for _, t in batches] == [10, 10, 5]
    assert torch.equal(torch.cat([t for _, t in batches]), torch.arange(25))
    with pytest.raises(PruningError, match="empty"):
        cache_batches([], 5, "cpu")
