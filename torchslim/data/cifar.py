"""CIFAR-10 in torchvision's python format (``cifar-10-batches-py``).

We read the pickled batches ourselves rather than through
``torchvision.datasets.CIFAR10``: that class insists on the original files' MD5
sums, so it rejects subsets and small test copies. The unpickler only accepts
the numpy types a CIFAR batch is made of, so a hostile file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from torchslim.data.tensor_dataset import TensorImageDataset
from torchslim.data.transforms import CIFAR10_STATS, resize_uint8
from torchslim.errors import DataError

NUM_CLASSES = 10
DEFAULT_IMAGE_SIZE = 32
TRAIN_CROP_PADDING = 4
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
VAL_BATCHES = ("test_batch",)

# (module, name) pairs a CIFAR batch pickle may reference: array reconstruction under numpy's
# old and new module names (core -> _core in 2.0, _frombuffer for protocol 5), and the codec
# Python 3 uses for bytes in protocol 2.
_ALLOWED_GLOBALS = {
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except plain numpy array reconstruction."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _batches_dir(root: Path) -> Path:
    """``root/cifar-10-batches-py``, or ``root`` itself when it holds the batches."""
    for candidate in (root / BATCHES_DIR, root):
        if (candidate / TRAIN_BATCHES[0]).is_file():
            return candidate
    raise DataError(
        f"CIFAR-10 not found: expected {root / BATCHES_DIR}/data_batch_1..5 and test_batch "
        f"(torchvision's python format), or those files directly in {root}"
    )


def _get(entry: dict, key: str):
    """Batches pickled by Python 2 have str keys after latin1 decoding, others bytes keys."""
    if key in entry:
        return entry[key]
    return entry.get(key.encode())


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch file {path} is missing")
    try:
        with path.open("rb") as handle:
            entry = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except Exception as error:  # any failure to unpickle is the file's fault
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(error).__name__}: {error}") from None
    data = _get(entry, "data") if isinstance(entry, dict) else None
    labels = _get(entry, "labels") if isinstance(entry, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR-10 batch {path}: expected 'data' as a uint8 array of shape (N, 3072)")
    if labels is None or len(labels) != data.shape[0]:
        raise DataError(
            f"CIFAR-10 batch {path}: expected 'labels' with one entry per image ({data.shape[0]})"
        )
    labels = np.asarray(labels, dtype=np.int64)
    out_of_range = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if out_of_range.size:
        index = int(out_of_range[0])
        raise DataError(f"CIFAR-10 batch {path}: label {labels[index]} at index {index} is outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _read_split(directory: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_read_batch(directory / name) for name in names]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_cifar10(root: Path, image_size: int) -> tuple[TensorImageDataset, TensorImageDataset]:
    """Train (random crop, padding 4, horizontal flip) and val datasets, resized and normalised."""
    directory = _batches_dir(root)
    datasets = []
    for names, train in ((TRAIN_BATCHES, True), (VAL_BATCHES, False)):
        images, labels = _read_split(directory, names)
        datasets.append(
            TensorImageDataset(
                resize_uint8(images, image_size),
                labels,
                CIFAR10_STATS,
                crop_padding=TRAIN_CROP_PADDING if train else 0,
                hflip=train,
            )
        )
    return datasets[0], datasets[1]
