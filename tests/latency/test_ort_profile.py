"""Matching an ONNX Runtime profile's nodes to the model's layers."""

from __future__ import annotations

import pytest

from torchslim.latency.layers import ConvConfig
from torchslim.latency.ort_profile import CalibrationError, ProfiledNode, match_nodes


def node(cin, cout, hw, kernel=1, depthwise=False, ms=1.0):
    weight = (cout, 1 if depthwise else cin, kernel, kernel)
    return ProfiledNode("Conv", (1, cin, hw, hw), weight, (1, cout, hw, hw), ms)


def test_match_nodes_accepts_block_padding_and_names_what_is_missing():
    configs = {
        "a": ConvConfig(3, 20, 3, 1, 1, 16, 16),
        "dw": ConvConfig(20, 20, 3, 1, 20, 16, 16),
        "b": ConvConfig(20, 36, 1, 1, 1, 16, 16),
    }
    nodes = [
        node(3, 32, 16, kernel=3, ms=0.1),
        node(32, 32, 16, kernel=3, depthwise=True, ms=0.2),
        node(32, 48, 16, ms=0.3),
    ]
    assert match_nodes(nodes, configs) == {"a": 0.1, "dw": 0.2, "b": 0.3}
    with pytest.raises(CalibrationError, match="layer b has no node"):
        match_nodes(nodes[:2], configs)
    with pytest.raises(
        CalibrationError, match="fits no layer"
    ):  # 64 is more than one block of padding over 36
        match_nodes(nodes[:2] + [node(32, 64, 16)], configs)
