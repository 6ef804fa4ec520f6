"""Layer configurations: the keys and MACs of a conv, and the input size every layer of a model sees."""

from __future__ import annotations

from torchslim.latency.layers import ConvConfig, layer_configs


def test_conv_config_key_and_channels():
    config = ConvConfig(32, 64, 3, 2, 1, 16, 16)
    assert config.key() == "c32x64k3s2g1h16w16b1"
    dw = ConvConfig(32, 32, 3, 1, 32, 16, 16)
    assert dw.depthwise and dw.with_channels(24, 99) == ConvConfig(24, 24, 3, 1, 24, 16, 16)


def test_layer_configs_record_input_sizes(wide):
    configs = layer_configs(wide, 32)
    assert configs["stem.0"] == ConvConfig(3, 48, 3, 2, 1, 32, 32)
    assert configs["dw.0"] == ConvConfig(48, 48, 3, 1, 48, 16, 16)
    assert configs["fc"] == ConvConfig(96, 10, 1, 1, 1, 1, 1, linear=True)
