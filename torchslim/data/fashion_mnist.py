"""Fashion-MNIST from its four IDX files, resized once in memory.

The files are the ones Debian's ``dataset-fashion-mnist`` package installs in
``/usr/share/datasets/fashion-mnist`` (gzip-compressed); raw IDX files work too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from torchslim.data.idx import find_idx, read_idx
from torchslim.data.tensor_dataset import TensorImageDataset
from torchslim.data.transforms import FASHION_MNIST_STATS, resize_uint8
from torchslim.errors import DataError

NUM_CLASSES = 10
DEFAULT_IMAGE_SIZE = 32
TRAIN_CROP_PADDING = 2

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TO_GET = "install it with `apt-get install dataset-fashion-mnist` or pass `fashion-mnist:DIR`"


def _locate(root: Path) -> dict[str, tuple[Path, Path]]:
    """Paths of the four files; a missing one is a DataError saying how to get the data."""
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST directory {root} does not exist; {_HOW_TO_GET}")
    found: dict[str, tuple[Path, Path]] = {}
    missing: list[str] = []
    for split, stems in _FILES.items():
        paths = [find_idx(root, stem) for stem in stems]
        missing += [f"{stem}[.gz]" for stem, path in zip(stems, paths, strict=True) if path is None]
        if None not in paths:
            found[split] = (paths[0], paths[1])
    if missing:
        raise DataError(f"Fashion-MNIST files missing in {root}: {', '.join(missing)}; {_HOW_TO_GET}")
    return found


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) and labels (N,) as uint8, checked for shape, count and range."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path} holds {labels.shape[0]} labels but {images_path} holds {images.shape[0]} images"
        )
    if images.shape[0] == 0:
        raise DataError(f"{images_path} holds no images")
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(
            f"{labels_path}: label {int(labels[bad])} at index {bad} is outside 0..{NUM_CLASSES - 1}"
        )
    return images, labels


def load_fashion_mnist(root: Path, image_size: int) -> tuple[TensorImageDataset, TensorImageDataset]:
    """Train and val datasets: resized to ``image_size``, 3 channels, normalised; train random-crops."""
    paths = _locate(root)
    datasets = []
    for split in ("train", "val"):
        images, labels = _read_split(*paths[split])
        tensor = resize_uint8(torch.from_numpy(images).unsqueeze(1), image_size)
        datasets.append(
            TensorImageDataset(
                tensor,
                torch.from_numpy(labels.astype(np.int64)),
                FASHION_MNIST_STATS,
                crop_padding=TRAIN_CROP_PADDING if split == "train" else 0,
            )
        )
    return datasets[0], datasets[1]
