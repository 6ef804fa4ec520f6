"""An evaluation sampler that shards a dataset across ranks without padding.

``DistributedSampler`` pads the index list so every rank gets the same count,
which makes summed accuracy count some samples twice. Here rank ``r`` of ``w``
gets indices ``r, r + w, r + 2w, ...``: every sample exactly once overall, the
ranks' lengths differing by at most one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import Sampler

from torchslim.errors import ConfigError


class ShardedEvalSampler(Sampler[int]):
    """Strided, unshuffled, unpadded shard of ``range(len(data_source))`` for one rank."""

    def __init__(
        self, data_source: Sized | int, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ConfigError(
                    "ShardedEvalSampler needs num_replicas and rank, or an initialised process group"
                )
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(f"ShardedEvalSampler: rank {rank} is not in 0..{num_replicas - 1}")
        self.num_samples_total = data_source if isinstance(data_source, int) else len(data_source)
        self.num_replicas = num_replicas
        self.rank = rank

    def _indices(self) -> range:
        return range(self.rank, self.num_samples_total, self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())

    def set_epoch(self, epoch: int) -> None:
        """No-op, so callers may treat it like DistributedSampler."""
