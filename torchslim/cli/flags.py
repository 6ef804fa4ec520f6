"""Flag value types: argparse ``type=`` functions, one per kind of value.

Each checks its value and says what it expected; argparse prefixes the flag's name, and the
command's parser turns that into one error line with exit code 2 (see ``common.CommandParser``).
The upper bounds keep a mistyped number from asking for terabytes of memory or a million
threads; they lie far above any real use.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from torchslim.config.schema import MAX_CLASSES, MAX_INPUT_SIZE
from torchslim.criteria import CRITERIA

MAX_THREADS = 1024  # also the most data-loader worker processes
MAX_TIMING_BATCH = 1024  # images in one timed call (bench latency, latency-aware planning)
MAX_SEED = 2**32 - 1
MAX_COUNT = sys.maxsize  # what islice, range and tensor sizes take


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def int_range(name: str, low: int, high: int = MAX_COUNT) -> Callable[[str], int]:
    """An integer type accepting ``low`` <= value <= ``high``."""
    expected = f">= {low}" if high == MAX_COUNT else f"from {low} to {high}"

    def parse(text: str) -> int:
        value = _integer(text)
        if high == MAX_COUNT and value > high:
            raise argparse.ArgumentTypeError(f"must be below 2**63, got {value}")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
        return value

    parse.__name__ = name
    return parse


positive_int = int_range("positive_int", 1)
non_negative_int = int_range("non_negative_int", 0)
input_size = int_range("input_size", 1, MAX_INPUT_SIZE)
class_count = int_range("class_count", 1, MAX_CLASSES)
thread_count = int_range("thread_count", 1, MAX_THREADS)
worker_count = int_range("worker_count", 0, MAX_THREADS)
timing_batch = int_range("timing_batch", 1, MAX_TIMING_BATCH)
seed = int_range("seed", 0, MAX_SEED)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _finite(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a share of MACs or channels to remove)."""
    value = _number(text)
    if not 0.0 < value < 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def shard(text: str) -> tuple[int, int]:
    """``K/N``: the K-th of N shares, 1 <= K <= N."""
    k, _, n = text.partition("/")
    try:
        share = int(k), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like K/N (e.g. 1/4), got {text!r}") from None
    if not 1 <= share[0] <= share[1]:
        raise argparse.ArgumentTypeError(f"must be K/N with 1 <= K <= N, got {text!r}")
    return share


def _file_on_the_way(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a directory (nothing can be created there)."""
    return next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)


def output_file(text: str) -> str:
    """A file to write: not a directory, and no ancestor is a file."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a file name, got the directory {text!r}")
    blocker = _file_on_the_way(path)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {blocker} is not a directory")
    return text


def output_dir(text: str) -> str:
    """A directory to write into (created when missing): not a file, and no ancestor is a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, expected a directory")
    blocker = _file_on_the_way(path)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"cannot create {text}: {blocker} is not a directory")
    return text


def criterion(text: str) -> str:
    """A registered criterion or alias, as its registered name."""
    if text not in CRITERIA:
        known = ", ".join(CRITERIA.list() + sorted(CRITERIA.aliases()))
        raise argparse.ArgumentTypeError(f"{text!r} is unknown; choose from {known}")
    return CRITERIA.canonical(text)
