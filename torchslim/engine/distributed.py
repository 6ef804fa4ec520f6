"""Data-parallel runs under ``torchrun``: process-group set-up from the environment torchrun provides.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1 the compressor
joins a process group (NCCL on CUDA, Gloo on CPU), shards the data, wraps the
model in DistributedDataParallel, and only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment(device_type: str) -> DistributedEnv:
    """Join the process group torchrun describes (once); a plain run gets a single-process env."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedEnv()
    env = DistributedEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend)
    return env


def barrier(env: DistributedEnv) -> None:
    if env.enabled:
        dist.barrier()


def leave_process_group() -> None:
    """Destroy the process group this process joined, if any: a rank that exits with the group
    alive (e.g. after a one-line error) can abort in the backend's threads at interpreter exit."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
