"""The model zoo: built-in names and aliases, torchvision and user factories, MAC and parameter counts."""

from __future__ import annotations

import re
import textwrap

import pytest
import torch
from torch import nn

from torchslim.errors import ModelError
from torchslim.models import (
    MODELS,
    build_model,
    canonical_name,
    list_models,
    resolve_spec,
    seed_param_names,
    torchvision_classifiers,
)
from torchslim.models.mobilenet_v1 import MobileNetV1
from torchslim.pruning.counting import profile_model


def classifier_out(model: nn.Module) -> int:
    """out_features of the last Linear layer."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


# --------------------------------------------------------------------------- registry


def test_registry_lists_the_three_builtin_models():
    assert MODELS.list() == ["mobilenet_v1", "mobilenet_v2", "resnet34"]
    assert list_models() == ["mobilenet_v1", "mobilenet_v2", "resnet34"]
    assert MODELS.aliases() == {
        "mobilenet": "mobilenet_v1",
        "mobilenetv1": "mobilenet_v1",
        "mobilenetv2": "mobilenet_v2",
    }


def test_list_models_with_torchvision_appends_prefixed_classifiers():
    names = list_models(include_torchvision=True)
    tv = torchvision_classifiers()
    assert names[:3] == ["mobilenet_v1", "mobilenet_v2", "resnet34"]
    assert names[3:] == [f"torchvision:{n}" for n in tv]
    assert {"resnet18", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16"} <= set(tv)
    assert tv == sorted(tv)


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("MobileNet", "mobilenet_v1"),
        ("mobilenet", "mobilenet_v1"),
        ("MobileNetV1", "mobilenet_v1"),
        ("MOBILENETV1", "mobilenet_v1"),
        ("mobilenet_v1", "mobilenet_v1"),
        ("MobileNetV2", "mobilenet_v2"),
        ("mobilenetv2", "mobilenet_v2"),
        ("Mobilenet_V2", "mobilenet_v2"),
        ("ResNet34", "resnet34"),
        ("RESNET34", "resnet34"),
        ("resnet34", "resnet34"),
    ],
)
def test_aliases_and_names_are_case_insensitive(alias, canonical):
    assert canonical_name(alias) == canonical
    assert resolve_spec(alias) is MODELS.get(canonical)
    assert alias in MODELS


def test_aliases_build_the_right_architecture():
    v1 = build_model("MobileNet", num_classes=7)
    assert isinstance(v1, MobileNetV1) and v1.fc.out_features == 7
    v2 = build_model("MobileNetV2", num_classes=7)
    assert type(v2).__name__ == "MobileNetV2" and v2.classifier[1].out_features == 7
    r34 = build_model("ResNet34", num_classes=7)
    assert type(r34).__name__ == "ResNet"
    assert [len(getattr(r34, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]


def test_builtin_model_registry_rejects_a_second_registration():
    with pytest.raises(ValueError, match="registered twice"):
        MODELS.register("ResNet34", MODELS.get("resnet34"))
    assert MODELS.list() == ["mobilenet_v1", "mobilenet_v2", "resnet34"]


# --------------------------------------------------------------------------- building


def test_torchvision_prefix_builds_a_torchvision_model():
    model = build_model("torchvision:resnet18", num_classes=5)
    assert type(model).__name__ == "ResNet"
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert model.fc.out_features == 5
    assert canonical_name("torchvision:resnet18") == "torchvision:resnet18"
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_unknown_torchvision_model_is_a_model_error():
    with pytest.raises(ModelError, match="unknown torchvision classifier 'resnet19'"):
        build_model("torchvision:resnet19")


@pytest.mark.parametrize("name, suggestion", [("resnet43", "resnet34"), ("mobilenet_v3", "mobilenet_v2")])
def test_unknown_name_is_a_model_error_with_a_suggestion(name, suggestion):
    with pytest.raises(ModelError) as info:
        build_model(name)
    message = str(info.value)
    assert f"unknown model {name!r}" in message
    assert f"did you mean {suggestion}" in message
    assert "known: mobilenet_v1, mobilenet_v2, resnet34" in message
    assert info.value.exit_code == 4


def test_unknown_name_without_close_match_still_lists_known():
    with pytest.raises(
        ModelError, match=r"unknown model 'zzz' \(known: mobilenet_v1, mobilenet_v2, resnet34\)"
    ):
        build_model("zzz")


@pytest.mark.parametrize(
    "name, head",
    [
        ("mobilenet_v1", lambda m: m.fc),
        ("mobilenet_v2", lambda m: m.classifier[1]),
        ("resnet34", lambda m: m.fc),
        ("torchvision:mobilenet_v3_small", lambda m: m.classifier[3]),
    ],
)
def test_num_classes_is_honoured(name, head):
    model = build_model(name, num_classes=13).eval()
    assert head(model).out_features == 13
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 13)
    assert classifier_out(build_model(name)) == 1000  # the default


def test_bad_keyword_is_a_model_error():
    with pytest.raises(ModelError, match="cannot build mobilenet_v1"):
        build_model("mobilenet_v1", no_such_option=3)


FACTORY_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, num_classes=1000, width=4):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))

    def make(num_classes=1000, width=4):
        return Tiny(num_classes, width)

    def make_fixed():
        return Tiny(3, 6)

    def not_a_module():
        return 5
    """
)


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "my_tiny_net.py"
    path.write_text(FACTORY_SOURCE)
    return path


def test_user_factory_from_a_file(factory_file):
    model = build_model(f"{factory_file}:make", num_classes=9)
    assert type(model).__name__ == "Tiny"
    assert model.fc.out_features == 9 and model.conv.out_channels == 4
    model = build_model(f"{factory_file}:make", num_classes=2, width=5)
    assert model.conv.out_channels == 5 and model.fc.out_features == 2
    assert canonical_name(f"{factory_file}:make") == f"{factory_file}:make"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 8)).shape == (1, 2)


def test_user_factory_without_num_classes_parameter(factory_file):
    model = build_model(f"{factory_file}:make_fixed", num_classes=9)
    assert model.fc.out_features == 3  # the factory does not take num_classes: it is not passed


def test_user_factory_from_a_module(factory_file, monkeypatch):
    monkeypatch.syspath_prepend(str(factory_file.parent))
    model = build_model("my_tiny_net:make", num_classes=4)
    assert type(model).__name__ == "Tiny" and model.fc.out_features == 4


def test_user_factory_errors(factory_file, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        build_model(f"{tmp_path / 'missing.py'}:make")
    with pytest.raises(ModelError, match="has no callable 'nope'"):
        build_model(f"{factory_file}:nope")
    with pytest.raises(ModelError, match="returned int, not an nn.Module"):
        build_model(f"{factory_file}:not_a_module")
    with pytest.raises(ModelError, match="cannot import 'no_such_module_xyz'"):
        build_model("no_such_module_xyz:make")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ModelError, match="importing .*broken.py failed: RuntimeError: boom"):
        build_model(f"{broken}:make")


# --------------------------------------------------------------------------- MACs and params at 224


@pytest.mark.parametrize(
    "name, macs, params",
    [
        ("mobilenet_v1", 568.7e6, 4.23e6),
        ("MobileNetV2", 300.8e6, 3.505e6),
        ("ResNet34", 3.66e9, 21.80e6),
    ],
)
def test_macs_and_params_match_references_at_224(name, macs, params):
    profile = profile_model(build_model(name), 224)
    assert profile.input_size == 224
    assert profile.macs == pytest.approx(macs, rel=0.01)
    assert profile.params == pytest.approx(params, rel=0.01)
    assert profile.size_bytes >= 4 * profile.params
    assert sum(layer.macs for layer in profile.layers) == profile.macs
    assert profile.layers[-1].kind == "linear" and profile.layers[-1].output_shape == (1000,)


def test_macs_scale_with_input_area():
    model = build_model("mobilenet_v1", num_classes=10)
    small, large = profile_model(model, 32), profile_model(model, 64)
    fc = 1024 * 10
    # Every conv output is 4x larger at twice the resolution; the classifier is not.
    assert large.macs - fc == 4 * (small.macs - fc)
    assert small.params == large.params


# --------------------------------------------------------------------------- pretrained


# --------------------------------------------------------------------------- seed names


def test_seed_names_empty_for_models_the_seed_did_not_know(factory_file):
    assert (
        seed_param_names("torchvision:mobilenet_v3_small", build_model("torchvision:mobilenet_v3_small"))
        == {}
    )
    assert seed_param_names(f"{factory_file}:make", build_model(f"{factory_file}:make")) == {}
    # torchvision ResNets share the ResNet34 naming scheme.
    r18 = seed_param_names("torchvision:resnet18", build_model("torchvision:resnet18"))
    assert sum(bool(re.match(".*branch.*_weights", s)) for s in r18.values()) == 8 * 2 + 3
