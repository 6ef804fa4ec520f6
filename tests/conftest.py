"""Shared test data: a tiny, learnable Fashion-MNIST look-alike in the real IDX format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).parent
TINY_MODEL = f"{TESTS_DIR / 'tiny_models.py'}:tiny_net"


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX file: magic (0, 0, type 0x08 = uint8, ndim), big-endian dims, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def make_patterned_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images whose class is a bright horizontal band at a class-specific height, plus noise."""
    labels = rng.integers(0, 10, size=count)
    images = rng.integers(0, 60, size=(count, 28, 28))
    for index, label in enumerate(labels):
        row = 2 + int(label) * 2
        images[index, row : row + 3, 4:24] = 230
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_fashion_mnist(root: Path, train: int, val: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", val)):
        images, labels = make_patterned_images(count, rng)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def tiny_fmnist(tmp_path_factory) -> str:
    """A data spec for 256 training and 128 validation images."""
    return "fashion-mnist:" + str(write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), 256, 128))
