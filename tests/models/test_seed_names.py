"""The seed's (PaddleSlim) parameter names select the layers the seed configs prune."""

from __future__ import annotations

import re

from torchslim.models import (
    build_model,
    seed_param_names,
)


def test_mobilenet_v1_seed_names_select_13_pointwise_weights():
    model = build_model("mobilenet_v1")
    names = seed_param_names("MobileNet", model)
    params = dict(model.named_parameters())
    assert set(names) <= set(params)
    selected = [n for n, seed in names.items() if re.match(".*_sep_weights", seed)]
    assert len(selected) == 13
    assert all(n.endswith(".pointwise.conv.weight") for n in selected)
    assert all(params[n].shape[2:] == (1, 1) for n in selected)
    assert names["features.0.conv.weight"] == "conv1_weights"
    assert names["features.1.depthwise.conv.weight"] == "conv2_1_dw_weights"
    assert names["features.13.pointwise.conv.weight"] == "conv6_sep_weights"
    assert names["fc.weight"] == "fc7_weights"


def test_mobilenet_v2_seed_names_select_16_expand_and_17_linear_weights():
    model = build_model("mobilenet_v2")
    names = seed_param_names("MobileNetV2", model)
    params = dict(model.named_parameters())
    assert set(names) <= set(params)
    selected = [seed for seed in names.values() if re.match(".*[r|d]_weights", seed)]
    assert len(selected) == 33
    assert sum(s.endswith("_expand_weights") for s in selected) == 16
    assert sum(s.endswith("_linear_weights") for s in selected) == 17
    # None of the depthwise convs is selected, and the names are unique.
    assert not any("dwise" in s for s in selected)
    assert len(set(names.values())) == len(names)
    assert names["features.1.conv.1.weight"] == "conv2_1_linear_weights"
    assert names["features.2.conv.0.0.weight"] == "conv3_1_expand_weights"
    assert names["features.18.0.weight"] == "conv9_weights"
    for torch_name, seed in names.items():
        if seed.endswith("_dwise_weights"):
            assert params[torch_name].shape[1] == 1  # depthwise: one input channel per group


def test_resnet34_seed_names_select_35_conv_weights():
    model = build_model("resnet34")
    names = seed_param_names("ResNet34", model)
    params = dict(model.named_parameters())
    selected = [n for n, seed in names.items() if re.match(".*branch.*_weights", seed)]
    assert len(selected) == 35  # 16 blocks x 2 convs + 3 downsample convs
    assert all(params[n].dim() == 4 for n in selected)
    assert sum(".downsample." in n for n in selected) == 3
    assert names["layer1.0.conv1.weight"] == "res2a_branch2a_weights"
    assert names["layer2.0.downsample.0.weight"] == "res3a_branch1_weights"
    assert names["layer4.2.conv2.weight"] == "res5c_branch2b_weights"
