"""Datasets and loaders for the supported data specs (see :mod:`torchslim.data.spec`)."""

from torchslim.data.loaders import DataBundle, bad_image_count, build_datasets, build_loaders
from torchslim.data.samplers import ShardedEvalSampler
from torchslim.data.spec import DEFAULT_DATA_SPEC, KNOWN_SCHEMES, DataSpec, parse_data_spec

__all__ = [
    "DEFAULT_DATA_SPEC",
    "KNOWN_SCHEMES",
    "DataBundle",
    "DataSpec",
    "ShardedEvalSampler",
    "bad_image_count",
    "build_datasets",
    "build_loaders",
    "parse_data_spec",
]
