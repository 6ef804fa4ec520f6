"""The seed's five PaddleSlim config files, as text and as parsed YAML, and helpers of the config tests."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.helpers import SEED_CONFIGS
from torchslim.config import (
    parse_config,
)
from torchslim.errors import ConfigError

SEED_NAMES = sorted(p.name for p in SEED_CONFIGS.glob("*.yaml"))


SEED_TEXTS = {name: (SEED_CONFIGS / name).read_text() for name in SEED_NAMES}


SEED_DICTS = {name: yaml.safe_load(text) for name, text in SEED_TEXTS.items()}

# Key paths of the uniform strategy and the pruner in the seed configs.
U = "strategies.uniform_pruning_strategy"
P = "pruners.pruner_1"


def mobilenet_v1_seed() -> dict:
    return copy.deepcopy(SEED_DICTS["mobilenet_v1.yaml"])


def config_error(mapping: dict, source: str = "bad.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(mapping, source=source)
    return info.value


def write_file(path: Path, text: str) -> Path:
    """``text`` at ``path``, parent directories created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
