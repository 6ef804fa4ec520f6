"""Calibration images for post-training quantization: the first N training images, checked finite."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from torchslim.errors import DataError

CALIBRATION_BATCH = 32


def calibration_images(dataset, count: int, *, source: str = "the training data") -> np.ndarray:
    """The first ``count`` images of ``dataset`` (in dataset order, so every run calibrates on the
    same images) as one float32 NCHW array; ``DataError`` when there are none or they are not finite."""
    if dataset is None or len(dataset) == 0:
        raise DataError(f"no calibration images: {source} is empty")
    count = min(count, len(dataset))
    with torch.random.fork_rng(devices=[]):  # a training set's random augmentation draws the same crops
        torch.manual_seed(0)  # every run, and the run's own random stream is left untouched
        images = [dataset[i][0] for i in range(count)]
    array = torch.stack([torch.as_tensor(image) for image in images]).float().numpy()
    check_finite(array, f"calibration images from {source}")
    return np.ascontiguousarray(array)


def check_finite(array: np.ndarray, what: str) -> None:
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise DataError(f"{what}: {bad} values are NaN or inf; nothing was written")


def batches(images: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> Iterator[np.ndarray]:
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


class ArrayReader(CalibrationDataReader):
    """ORT's calibration reader over an array of images, restartable (``rewind``) so every pass of a
    calibration method sees the same batches."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> None:
        self.input_name = input_name
        # equal batches: ORT's histogram calibrators stack each tensor's batches into one array
        even = max(size for size in range(1, batch_size + 1) if len(images) % size == 0)
        self.parts: Sequence[np.ndarray] = list(batches(images, even))
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.parts):
            return None
        self.position += 1
        return {self.input_name: self.parts[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0

    def __len__(self) -> int:
        return len(self.parts)
