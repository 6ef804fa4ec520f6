"""The sensitivity table: the ratios a delta rate stands for."""

from __future__ import annotations

from torchslim.sensitivity.table import (
    ratios_from_delta,
)


def test_ratios_from_delta():
    assert ratios_from_delta(0.1) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert ratios_from_delta(0.2) == [0.2, 0.4, 0.6, 0.8]
    assert ratios_from_delta(0.3) == [0.3, 0.6, 0.9]
