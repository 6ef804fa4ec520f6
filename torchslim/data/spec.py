"""Parsing ``--data`` strings such as ``fashion-mnist`` or ``imagenet:/data/ilsvrc``.

A spec is ``SCHEME`` or ``SCHEME:DIR``; only Fashion-MNIST has a default DIR
(where Debian's ``dataset-fashion-mnist`` package installs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchslim.errors import DataError

DEFAULT_DATA_SPEC = "fashion-mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# scheme -> default directory (None: the spec must name one).
_DEFAULT_DIRS: dict[str, Path | None] = {
    "fashion-mnist": FASHION_MNIST_DIR,
    "imagenet": None,
    "folder": None,
    "cifar10": None,
}
KNOWN_SCHEMES: tuple[str, ...] = tuple(sorted(_DEFAULT_DIRS))


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: which reader to use and where its files are."""

    scheme: str
    root: Path

    def __str__(self) -> str:
        return f"{self.scheme}:{self.root}"


def _usage() -> str:
    forms = [f"{s}[:DIR]" if _DEFAULT_DIRS[s] is not None else f"{s}:DIR" for s in KNOWN_SCHEMES]
    return ", ".join(forms)


def parse_data_spec(spec: str) -> DataSpec:
    """Split ``SCHEME[:DIR]``; an unknown scheme or a missing DIR is a DataError listing the forms."""
    text = spec.strip() if isinstance(spec, str) else ""
    if not text:
        raise DataError(f"empty data spec {spec!r}; expected one of: {_usage()}")
    scheme, sep, directory = text.partition(":")
    scheme = scheme.strip().lower()
    if scheme not in _DEFAULT_DIRS:
        raise DataError(f"unknown data scheme {scheme!r} in data spec {spec!r}; known: {_usage()}")
    directory = directory.strip()
    if sep and not directory:
        raise DataError(f"data spec {spec!r} names no directory after ':'; expected {scheme}:DIR")
    if directory:
        return DataSpec(scheme, Path(directory).expanduser())
    default = _DEFAULT_DIRS[scheme]
    if default is None:
        raise DataError(f"data spec {spec!r} needs a directory: {scheme}:DIR")
    return DataSpec(scheme, default)
