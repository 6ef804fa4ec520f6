"""From a data spec to train/val datasets and DataLoaders.

Defaults per scheme: Fashion-MNIST and CIFAR-10 are 32x32 and in memory;
``imagenet`` and ``folder`` decode files with the ImageNet presets at 224x224.
For ``imagenet`` the number of classes is the largest label in either list plus
one (not a fixed 1000), so subsets with fewer classes work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from torchslim.data import cifar, fashion_mnist
from torchslim.data.image_list import ImageListDataset, read_image_list, scan_class_folders
from torchslim.data.samplers import ShardedEvalSampler
from torchslim.data.shuffle import EpochShuffleSampler
from torchslim.data.spec import DataSpec, parse_data_spec
from torchslim.data.transforms import imagenet_eval_transform, imagenet_train_transform
from torchslim.errors import ConfigError, DataError

IMAGENET_DEFAULT_SIZE = 224
SPLITS = ("train", "val")


@dataclass
class DataBundle:
    """Everything a trainer needs from the data side.

    ``train_sampler`` is the DistributedSampler when distributed, else an
    EpochShuffleSampler (None when not shuffling); the trainer calls its
    ``set_epoch`` each epoch. Batch sizes are per process. The train
    loader drops its last incomplete batch when there is more than one batch, so
    BatchNorm never sees a batch of one; sizes below count all samples.
    """

    train_loader: DataLoader
    val_loader: DataLoader
    num_classes: int
    image_size: int
    train_size: int
    val_size: int
    description: str
    train_sampler: DistributedSampler | EpochShuffleSampler | None = None

    @property
    def bad_images(self) -> int:
        """Images skipped as unreadable so far, over both splits (0 for in-memory datasets)."""
        return bad_image_count(self.train_loader.dataset) + bad_image_count(self.val_loader.dataset)


def bad_image_count(dataset: Dataset) -> int:
    """The ``bad_images`` counter of a dataset, looking through Subset wrappers."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "bad_images", 0)


def check_label_range(data: DataBundle, num_classes: int, splits: tuple[str, ...] = ("train", "val")) -> None:
    """A DataError naming the first used sample (list file and line for ImageNet lists) whose label
    is not below ``num_classes``, the model's number of outputs: found before any batch runs."""
    loaders = {"train": data.train_loader, "val": data.val_loader}
    for split, loader in ((split, loaders[split]) for split in splits):
        dataset, indices = loader.dataset, None
        while isinstance(dataset, Subset):
            inner = np.asarray(dataset.indices, dtype=np.int64)
            indices, dataset = (inner if indices is None else inner[indices]), dataset.dataset
        labels = getattr(dataset, "labels", None)
        if labels is None:
            continue
        labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        used = labels if indices is None else labels[indices]
        bad = np.flatnonzero(used >= num_classes)
        if bad.size:
            index = int(bad[0] if indices is None else indices[bad[0]])
            where = dataset.where(index) if hasattr(dataset, "where") else f"{split} sample {index}"
            raise DataError(
                f"{where}: label {int(labels[index])} is out of range for a model with {num_classes} classes "
                f"(0..{num_classes - 1}) ({bad.size} {split} label{'s' if bad.size > 1 else ''} in all); "
                "check num_classes or the labels"
            )


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` samples, deterministically; the whole dataset when it is smaller."""
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, range(limit))


def _imagenet(spec: DataSpec, image_size: int, skip_bad_images: bool) -> tuple[Dataset, Dataset, int]:
    root = spec.root
    if not root.is_dir():
        raise DataError(
            f"imagenet directory {root} does not exist; expected {root}/train_list.txt and val_list.txt"
        )
    lists = {split: root / f"{split}_list.txt" for split in SPLITS}
    parsed = {split: read_image_list(path) for split, path in lists.items()}
    num_classes = 1 + max(int(labels.max()) for _, labels in parsed.values())
    sources = {split: str(path) for split, path in lists.items()}
    return (*_image_datasets(root, parsed, sources, image_size, skip_bad_images), num_classes)


def _folder(spec: DataSpec, image_size: int, skip_bad_images: bool) -> tuple[Dataset, Dataset, int]:
    root = spec.root
    train_paths, train_labels, classes = scan_class_folders(root, "train")
    val_paths, val_labels, _ = scan_class_folders(root, "val", classes)
    parsed = {"train": (train_paths, train_labels), "val": (val_paths, val_labels)}
    sources = {split: str(root / split) for split in SPLITS}
    return (*_image_datasets(root, parsed, sources, image_size, skip_bad_images), len(classes))


def _image_datasets(
    root: Path, parsed: dict[str, tuple], sources: dict[str, str], image_size: int, skip_bad_images: bool
) -> tuple[ImageListDataset, ImageListDataset]:
    """Train and val datasets of image files ((paths, labels) per split), with the ImageNet presets."""
    transforms = {"train": imagenet_train_transform(image_size), "val": imagenet_eval_transform(image_size)}
    train, val = (
        ImageListDataset(
            root, *parsed[split], transforms[split], source=sources[split], skip_bad_images=skip_bad_images
        )
        for split in SPLITS
    )
    return train, val


def _default_size(scheme: str) -> int:
    if scheme == "fashion-mnist":
        return fashion_mnist.DEFAULT_IMAGE_SIZE
    if scheme == "cifar10":
        return cifar.DEFAULT_IMAGE_SIZE
    return IMAGENET_DEFAULT_SIZE


def build_datasets(
    spec: str,
    *,
    image_size: int | None = None,
    train_limit: int | None = None,
    val_limit: int | None = None,
    skip_bad_images: bool = False,
) -> tuple[Dataset, Dataset, int, int]:
    """``(train_ds, val_ds, num_classes, image_size)`` for a data spec, limits applied."""
    for name, value in (("image_size", image_size), ("train_limit", train_limit), ("val_limit", val_limit)):
        _check_positive(name, value)
    parsed = parse_data_spec(spec)
    size = image_size if image_size is not None else _default_size(parsed.scheme)
    if parsed.scheme == "fashion-mnist":
        train, val = fashion_mnist.load_fashion_mnist(parsed.root, size)
        num_classes = fashion_mnist.NUM_CLASSES
    elif parsed.scheme == "cifar10":
        train, val = cifar.load_cifar10(parsed.root, size)
        num_classes = cifar.NUM_CLASSES
    elif parsed.scheme == "imagenet":
        train, val, num_classes = _imagenet(parsed, size, skip_bad_images)
    else:
        train, val, num_classes = _folder(parsed, size, skip_bad_images)
    return _limit(train, train_limit), _limit(val, val_limit), num_classes, size


def _distributed_world() -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError("distributed data loading needs an initialised torch.distributed process group")
    return dist.get_world_size(), dist.get_rank()


def build_loaders(
    spec: str,
    *,
    batch_size: int = 64,
    image_size: int | None = None,
    train_limit: int | None = None,
    val_limit: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    skip_bad_images: bool = False,
    shuffle_train: bool = True,
) -> DataBundle:
    """Datasets plus loaders: train shuffled reproducibly from ``seed``, val in order.

    When distributed, train uses DistributedSampler (shuffle, seed) and val a
    ShardedEvalSampler, so per-rank evaluation sums count each sample once.
    """
    _check_positive("batch_size", batch_size)
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    train_ds, val_ds, num_classes, size = build_datasets(
        spec,
        image_size=image_size,
        train_limit=train_limit,
        val_limit=val_limit,
        skip_bad_images=skip_bad_images,
    )
    train_sampler, val_sampler = _samplers(train_ds, val_ds, distributed, shuffle_train, seed)
    per_rank_train = len(train_sampler) if distributed else len(train_ds)
    common = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": num_workers > 0,
    }
    train_loader = DataLoader(
        train_ds, sampler=train_sampler, drop_last=per_rank_train > batch_size, **common
    )
    val_loader = DataLoader(val_ds, shuffle=False, sampler=val_sampler, **common)
    parsed = parse_data_spec(spec)
    description = f"{parsed.scheme} ({parsed.root}), {size}x{size}, train {len(train_ds)}, val {len(val_ds)}"
    return DataBundle(
        train_loader=train_loader,
        val_loader=val_loader,
        num_classes=num_classes,
        image_size=size,
        train_size=len(train_ds),
        val_size=len(val_ds),
        description=description,
        train_sampler=train_sampler,
    )


def _samplers(
    train_ds: Dataset, val_ds: Dataset, distributed: bool, shuffle_train: bool, seed: int
) -> tuple[DistributedSampler | EpochShuffleSampler | None, ShardedEvalSampler | None]:
    """The train and val samplers: per-rank shards when distributed, else a seeded shuffle (or none)."""
    if distributed:
        world, rank = _distributed_world()
        train_sampler = DistributedSampler(
            train_ds, num_replicas=world, rank=rank, shuffle=shuffle_train, seed=seed
        )
        return train_sampler, ShardedEvalSampler(val_ds, num_replicas=world, rank=rank)
    if (
        shuffle_train
    ):  # the order of epoch e depends on (seed, e) only, so a resumed run sees the same batches
        return EpochShuffleSampler(train_ds, seed=seed), None
    return None, None
