"""How a single image file is turned into a model input, recorded with saved models for ``infer``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from torchslim.errors import DataError

from .spec import parse_data_spec
from .transforms import CIFAR10_STATS, FASHION_MNIST_STATS, IMAGENET_STATS


def preprocess_record(spec: str, image_size: int) -> dict[str, Any]:
    """The preprocessing of ``spec``'s validation split, as plain JSON."""
    scheme = parse_data_spec(spec).scheme
    if scheme == "fashion-mnist":
        mean, std = FASHION_MNIST_STATS
        return {
            "grayscale": True,
            "resize": image_size,
            "crop": image_size,
            "mean": list(mean) * 3,
            "std": list(std) * 3,
        }
    mean, std = CIFAR10_STATS if scheme == "cifar10" else IMAGENET_STATS
    resize = image_size if scheme == "cifar10" else round(image_size * 256 / 224)
    return {"grayscale": False, "resize": resize, "crop": image_size, "mean": list(mean), "std": list(std)}


def load_image(path: str | Path, record: dict[str, Any]) -> np.ndarray:
    """One image file as a (3, crop, crop) float32 array, preprocessed like the validation data."""
    try:
        with Image.open(path) as image:
            image = image.convert("L" if record["grayscale"] else "RGB")
            image = _resize_shorter(image, record["resize"])
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = _center_crop(array, record["crop"])
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = (array - np.asarray(record["mean"], np.float32)) / np.asarray(record["std"], np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _resize_shorter(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    return image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)


def _center_crop(array: np.ndarray, size: int) -> np.ndarray:
    height, width = array.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return array[top : top + size, left : left + size]
