"""The sharded evaluation sampler: each index on exactly one rank, no padding."""

from __future__ import annotations

import pytest

from torchslim.data import (
    ShardedEvalSampler,
)
from torchslim.errors import ConfigError


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("size", [0, 1, 10, 11])
def test_sharded_eval_sampler_covers_each_index_once(world, size):
    shards = [list(ShardedEvalSampler(size, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    assert [len(ShardedEvalSampler(size, world, r)) for r in range(world)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_sharded_eval_sampler_rejects_bad_rank():
    with pytest.raises(ConfigError, match="rank 2"):
        ShardedEvalSampler(10, num_replicas=2, rank=2)
