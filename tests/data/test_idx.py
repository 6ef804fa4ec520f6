"""Reading IDX files: plain and gzip, big-endian types, errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.data import write_idx
from torchslim.data.idx import read_idx
from torchslim.errors import DataError


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_read_idx_roundtrip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    result = read_idx(write_idx(tmp_path / name, array))
    assert result.dtype == np.uint8 and result.shape == (2, 3, 4)
    np.testing.assert_array_equal(result, array)


def test_read_idx_big_endian_int32(tmp_path):
    array = np.array([1, -2, 70000], dtype=np.int32)
    result = read_idx(write_idx(tmp_path / "ints", array, type_code=0x0C))
    assert result.tolist() == [1, -2, 70000]
    assert result.dtype.isnative


def test_read_idx_bad_magic_names_file(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match="bad magic number 0x12340801") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_and_bad_gzip(tmp_path):
    path = write_idx(tmp_path / "short", np.zeros(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="holds 7 data bytes.*needs 10"):
        read_idx(path)
    bad_gz = tmp_path / "broken.gz"
    bad_gz.write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match="not valid gzip") as info:
        read_idx(bad_gz)
    assert str(bad_gz) in str(info.value)
