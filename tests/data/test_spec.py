"""Parsing --data specs: schemes, directories, the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchslim.data import (
    DEFAULT_DATA_SPEC,
    parse_data_spec,
)
from torchslim.data.spec import FASHION_MNIST_DIR
from torchslim.errors import DataError


def test_parse_default_spec_uses_debian_dir():
    spec = parse_data_spec(DEFAULT_DATA_SPEC)
    assert DEFAULT_DATA_SPEC == "fashion-mnist"
    assert spec.scheme == "fashion-mnist"
    assert spec.root == Path("/usr/share/datasets/fashion-mnist") == FASHION_MNIST_DIR


@pytest.mark.parametrize(
    ("text", "scheme", "root"),
    [
        ("fashion-mnist:/data/fm", "fashion-mnist", "/data/fm"),
        ("imagenet:/data/ilsvrc", "imagenet", "/data/ilsvrc"),
        ("folder:rel/dir", "folder", "rel/dir"),
        ("CIFAR10:/x:y", "cifar10", "/x:y"),
    ],
)
def test_parse_scheme_and_dir(text, scheme, root):
    spec = parse_data_spec(text)
    assert (spec.scheme, spec.root) == (scheme, Path(root))


def test_parse_unknown_scheme_lists_known_ones():
    with pytest.raises(DataError) as info:
        parse_data_spec("mnist:/data")
    message = str(info.value)
    assert "'mnist'" in message
    for form in ("cifar10:DIR", "fashion-mnist[:DIR]", "folder:DIR", "imagenet:DIR"):
        assert form in message


@pytest.mark.parametrize("text", ["imagenet", "folder", "cifar10", "imagenet:", ""])
def test_parse_missing_dir_is_an_error(text):
    with pytest.raises(DataError, match="DIR|directory"):
        parse_data_spec(text)
