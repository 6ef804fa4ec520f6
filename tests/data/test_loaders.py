"""From a data spec to loaders: distributed samplers under a process group, argument checks."""

from __future__ import annotations

import pytest

from tests.helpers.data import first_epoch_labels, make_fmnist_dir
from torchslim.data import (
    ShardedEvalSampler,
    build_datasets,
    build_loaders,
)
from torchslim.errors import ConfigError, DataError


def test_distributed_needs_process_group(tmp_path):
    root = make_fmnist_dir(tmp_path / "fm")
    with pytest.raises(ConfigError, match="process group"):
        build_loaders(f"fashion-mnist:{root}", distributed=True)


def test_distributed_loaders_single_process_group(tmp_path):
    import torch.distributed as dist

    root = make_fmnist_dir(tmp_path / "fm", n_train=20, n_val=7)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        bundle = build_loaders(f"fashion-mnist:{root}", batch_size=4, distributed=True, seed=3)
        assert bundle.train_sampler is not None
        bundle.train_sampler.set_epoch(1)
        assert sorted(first_epoch_labels(bundle.train_loader)) == sorted(i % 10 for i in range(20))
        assert isinstance(bundle.val_loader.sampler, ShardedEvalSampler)
        assert first_epoch_labels(bundle.val_loader) == list(range(7))
    finally:
        dist.destroy_process_group()


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="unknown data scheme"):
        build_loaders("svhn:/data")
    with pytest.raises(ConfigError, match="batch_size"):
        build_loaders(f"fashion-mnist:{tmp_path}", batch_size=0)
    with pytest.raises(ConfigError, match="train_limit"):
        build_datasets(f"fashion-mnist:{tmp_path}", train_limit=0)
