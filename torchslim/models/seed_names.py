"""The seed's (PaddleSlim) parameter names for torchvision's MobileNetV2 and ResNet34.

The seed's configs select layers with regexes over Paddle names
(``.*[r|d]_weights``, ``.*branch.*_weights``); mapping our names onto theirs lets
those configs load unchanged.
"""

from __future__ import annotations

from torch import nn

# The seed's MobileNetV2 stage names: bottleneck stages conv2 .. conv8.
_MOBILENET_V2_STAGE_REPEATS = (1, 2, 3, 4, 3, 3, 1)


def mobilenet_v2_seed_names(model: nn.Module) -> dict[str, str]:
    """torchvision MobileNetV2 names -> ``conv{stage}_{i}_{expand|dwise|linear}_weights``."""
    names: dict[str, str] = {}
    _conv_bn(names, "features.0.0", "features.0.1", "conv1_1")
    block = 1
    for stage, repeats in enumerate(_MOBILENET_V2_STAGE_REPEATS, start=2):
        for i in range(1, repeats + 1):
            seed = f"conv{stage}_{i}"
            prefix = f"features.{block}.conv"
            has_expand = len(model.features[block].conv) == 4
            if has_expand:
                _conv_bn(names, f"{prefix}.0.0", f"{prefix}.0.1", f"{seed}_expand")
                depthwise, linear, linear_bn = 1, 2, 3
            else:
                depthwise, linear, linear_bn = 0, 1, 2
            _conv_bn(names, f"{prefix}.{depthwise}.0", f"{prefix}.{depthwise}.1", f"{seed}_dwise")
            _conv_bn(names, f"{prefix}.{linear}", f"{prefix}.{linear_bn}", f"{seed}_linear")
            block += 1
    _conv_bn(names, f"features.{block}.0", f"features.{block}.1", "conv9")
    names["classifier.1.weight"] = "fc10_weights"
    names["classifier.1.bias"] = "fc10_offset"
    return names


def resnet_seed_names(model: nn.Module) -> dict[str, str]:
    """torchvision ResNet names -> ``res{stage}{a,b..}_branch{1,2a,2b,2c}_weights``."""
    names: dict[str, str] = {
        "conv1.weight": "conv1_weights",
        "bn1.weight": "bn_conv1_scale",
        "bn1.bias": "bn_conv1_offset",
    }
    for stage in range(1, 5):
        layer = getattr(model, f"layer{stage}")
        for index, block in enumerate(layer):
            seed = f"res{stage + 1}{chr(ord('a') + index)}"
            prefix = f"layer{stage}.{index}"
            for conv_index, branch in enumerate(("branch2a", "branch2b", "branch2c"), start=1):
                if hasattr(block, f"conv{conv_index}"):
                    _conv_bn(
                        names, f"{prefix}.conv{conv_index}", f"{prefix}.bn{conv_index}", f"{seed}_{branch}"
                    )
            if block.downsample is not None:
                _conv_bn(names, f"{prefix}.downsample.0", f"{prefix}.downsample.1", f"{seed}_branch1")
    names["fc.weight"] = "fc_0.w_0"
    names["fc.bias"] = "fc_0.b_0"
    return names


def _conv_bn(names: dict[str, str], conv: str, bn: str, seed: str) -> None:
    names[f"{conv}.weight"] = f"{seed}_weights"
    names[f"{bn}.weight"] = f"{seed}_bn_scale"
    names[f"{bn}.bias"] = f"{seed}_bn_offset"
