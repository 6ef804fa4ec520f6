"""Code the test modules share; import it as ``from tests.helpers.<module> import name``.

Fixtures live in ``tests/conftest.py``; no test module imports another test module.
The paths every part of the suite needs are defined here.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO / "tests"
SEED_CONFIGS = TESTS_DIR / "fixtures" / "seed_configs"
# The tiny model as the CLI names a user factory: ``--model FILE:FUNCTION``.
TINY_MODEL = f"{TESTS_DIR / 'helpers' / 'tiny_models.py'}:tiny_net"
SEQUENTIAL_MODEL = f"{TESTS_DIR / 'helpers' / 'tiny_models.py'}:sequential_net"
TINY_VIT = f"{TESTS_DIR / 'helpers' / 'tiny_models.py'}:tiny_vit"
TINY_TIMM_VIT = f"{TESTS_DIR / 'helpers' / 'tiny_models.py'}:tiny_timm_vit"
TINY_SWIN = f"{TESTS_DIR / 'helpers' / 'tiny_models.py'}:tiny_swin"
TINY_SWIN_V2 = f"{TESTS_DIR / 'helpers' / 'tiny_models.py'}:tiny_swin_v2"
TINY_MAXVIT = f"{TESTS_DIR / 'helpers' / 'tiny_models.py'}:tiny_maxvit"
