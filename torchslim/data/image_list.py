"""Datasets of image files on disk: ILSVRC-style list files and class-per-folder trees.

Paths are kept in one numpy bytes array rather than a list of Python strings, so
DataLoader workers forked from the main process do not copy them page by page
as reference counts change.

Images are opened lazily in ``__getitem__``. A missing or undecodable file is a
DataError naming it; with ``skip_bad_images`` it is instead logged once, marked
bad in a shared-memory flag tensor (so every worker and the main process see
it), and the next readable sample in index order is returned in its place.
:attr:`ImageListDataset.bad_images` counts the distinct files found bad so far.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from torchslim.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"}
)


def read_image_list(list_path: Path) -> tuple[list[str], np.ndarray]:
    """Parse ``relative/path label`` lines; blank lines and ``#`` comments are skipped.

    The path is everything before the last whitespace-separated field, so it may
    contain spaces. A malformed line or negative label is a DataError naming the
    file and line number.
    """
    try:
        text = list_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"image list {list_path} does not exist; expected lines 'relative/path.jpeg label'"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read image list {list_path}: {error}") from None
    paths: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            raise DataError(f"{list_path} line {number}: expected 'relative/path label', got {line!r}")
        try:
            label = int(fields[1])
        except ValueError:
            raise DataError(f"{list_path} line {number}: label {fields[1]!r} is not an integer") from None
        if label < 0:
            raise DataError(f"{list_path} line {number}: label {label} is negative")
        paths.append(fields[0])
        labels.append(label)
    if not paths:
        raise DataError(f"image list {list_path} lists no images; expected lines 'relative/path.jpeg label'")
    return paths, np.asarray(labels, dtype=np.int64)


def _class_images(class_dir: Path) -> list[Path]:
    """Image files under ``class_dir`` (recursively), sorted, hidden files ignored."""
    return sorted(
        path
        for path in class_dir.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()
    )


def scan_class_folders(
    root: Path, split: str, classes: list[str] | None = None
) -> tuple[list[str], np.ndarray, list[str]]:
    """Images of ``root/split/<class>/...`` as paths relative to ``root``, labels and class names.

    Without ``classes`` they are the sorted subfolder names and every class must
    hold an image; with ``classes`` (the train split's) a folder outside them is
    a DataError, since its label would be meaningless.
    """
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(
            f"folder dataset: {split_dir} does not exist; expected {root}/{{train,val}}/<class>/<images>"
        )
    found = sorted(
        entry.name for entry in split_dir.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if classes is None:
        classes = found
        if not classes:
            raise DataError(f"folder dataset: {split_dir} has no class subfolders")
    else:
        unknown = [name for name in found if name not in classes]
        if unknown:
            raise DataError(
                f"folder dataset: class folder {split_dir / unknown[0]} does not exist in the train split"
            )
    index = {name: i for i, name in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for name in found:
        images = _class_images(split_dir / name)
        if not images and split == "train":
            raise DataError(f"folder dataset: class folder {split_dir / name} holds no images")
        paths += [str(image.relative_to(root)) for image in images]
        labels += [index[name]] * len(images)
    if not paths:
        raise DataError(
            f"folder dataset: {split_dir} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return paths, np.asarray(labels, dtype=np.int64), classes


class ImageListDataset(Dataset):
    """(image, label) pairs decoded from files under ``root``; see the module docstring for bad files."""

    def __init__(
        self,
        root: Path,
        paths: list[str],
        labels: np.ndarray,
        transform: Callable,
        *,
        source: str,
        skip_bad_images: bool = False,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.root = os.fsencode(root)
        self._paths = np.array([os.fsencode(path) for path in paths], dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.source = source
        self.skip_bad_images = skip_bad_images
        self._bad = torch.zeros(len(paths), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def bad_images(self) -> int:
        """Distinct image files found missing or undecodable so far (only with skip_bad_images)."""
        return int(self._bad.sum())

    def path(self, index: int) -> Path:
        return Path(os.fsdecode(os.path.join(self.root, self._paths[index])))

    def where(self, index: int) -> str:
        """Where sample ``index`` and its label come from: ``LIST line N (image)`` for list files."""
        source = Path(self.source)
        if source.is_file():
            count = -1
            for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip() and not line.strip().startswith("#"):  # the lines read_image_list keeps
                    count += 1
                    if count == index:
                        return f"{source} line {number} ({self.path(index)})"
        return str(self.path(index))

    def _load(self, index: int) -> Image.Image:
        path = self.path(index)
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"image {path} (listed in {self.source}) does not exist") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise DataError(f"cannot decode image {path} (listed in {self.source}): {error}") from None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        count = len(self._paths)
        for offset in range(count):
            current = (index + offset) % count
            if self._bad[current]:
                continue
            try:
                image = self._load(current)
            except DataError as error:
                if not self.skip_bad_images:
                    raise
                self._bad[current] = True
                log.warning("skipping bad image: %s", error)
                continue
            return self.transform(image), int(self.labels[current])
        raise DataError(f"every one of the {count} images listed in {self.source} is missing or unreadable")
