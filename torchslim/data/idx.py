"""Reading IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.

The header is two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension; the data follows, big-endian, row-major.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from torchslim.errors import DataError

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Whole file contents, decompressed when it is gzip (by suffix or by its magic bytes)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read IDX file {path}: {error.strerror or error}") from None
    if path.suffix == ".gz" or raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"IDX file {path} is not valid gzip: {error}") from None
    return raw


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian array; ``source`` names the file in errors."""
    if len(data) < 4:
        raise DataError(f"IDX file {source} is too short ({len(data)} bytes) to hold a header")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(
            f"IDX file {source} has bad magic number 0x{magic:08x}; expected 0x0000TTNN "
            f"with type TT in {{08,09,0b,0c,0d,0e}} and NN >= 1 dimensions"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {source} is truncated inside its header ({ndim} dimensions declared)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        raise DataError(
            f"IDX file {source} holds {actual} data bytes; its header (shape {shape}, "
            f"{dtype.itemsize}-byte items) needs {expected}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw); any defect is a DataError naming the file."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def find_idx(directory: Path, stem: str) -> Path | None:
    """The file ``stem`` or ``stem.gz`` in ``directory`` (raw preferred), or None."""
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None
