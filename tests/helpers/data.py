"""Generated data in the real file formats: Fashion-MNIST look-alikes (IDX), ImageNet lists, class
folders, CIFAR.

The writers are independent of torchslim's readers, so that a reader bug cannot hide in both."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def make_patterned_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images whose class is a bright horizontal band at a class-specific height, plus noise."""
    labels = rng.integers(0, 10, size=count)
    images = rng.integers(0, 60, size=(count, 28, 28))
    for index, label in enumerate(labels):
        row = 2 + int(label) * 2
        images[index, row : row + 3, 4:24] = 230
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_fashion_mnist(root: Path, train: int, val: int, seed: int = 0) -> Path:
    """The four Fashion-MNIST files of ``train`` and ``val`` banded images (see make_patterned_images)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", val)):
        images, labels = make_patterned_images(count, rng)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def write_brightness_fashion_mnist(root: Path, train: int, val: int, noise: int = 0) -> Path:
    """Fashion-MNIST files: image i has label i % 10 and brightness 25 * label (+ noise below ``noise``)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", val)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = labels[:, None, None] * 25 + np.zeros((count, 28, 28), dtype=np.int64)
        if noise:
            images = images + rng.integers(0, noise, (count, 28, 28))
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    """Write ``array`` as IDX (gzip when the name ends in .gz), independently of the reader."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    values = array.astype(np.uint8) if type_code == 0x08 else array.astype(array.dtype.newbyteorder(">"))
    data = header + values.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_fmnist_dir(root: Path, n_train: int = 20, n_val: int = 10, gz: bool = True) -> Path:
    """A mini Fashion-MNIST: image i is constant with value i*6, label i % 10."""
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count in (("train", n_train), ("t10k", n_val)):
        images = np.stack([np.full((28, 28), i * 6, dtype=np.uint8) for i in range(count)])
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return root


COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def write_jpeg(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")


def write_png(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), color).save(path, format="PNG")


def make_imagenet_dir(root: Path, n_train: int = 6, n_val: int = 4) -> Path:
    """ILSVRC-style layout: train/val JPEGs plus list files; image i has label i % 3."""
    lines = {"train": [], "val": []}
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            rel = f"{split}/n{i % 3:08d}/img_{i}.JPEG"
            write_jpeg(root / rel, COLORS[i % len(COLORS)])
            lines[split].append(f"{rel} {i % 3}")
        (root / f"{split}_list.txt").write_text("\n".join(lines[split]) + "\n")
    return root


def make_cifar_dir(root: Path, per_batch: int = 4, n_val: int = 3) -> Path:
    """torchvision's cifar-10-batches-py layout; image i of a batch is constant i*20, label i."""
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    names = [(f"data_batch_{b}", per_batch) for b in range(1, 6)] + [("test_batch", n_val)]
    for name, count in names:
        data = np.stack([np.full(3072, i * 20, dtype=np.uint8) for i in range(count)])
        entry = {b"batch_label": name.encode(), b"data": data, b"labels": list(range(count))}
        (batches / name).write_bytes(pickle.dumps(entry, protocol=2))
    return root


def first_epoch_labels(loader) -> list[int]:
    return [int(y) for _, labels in loader for y in labels]
