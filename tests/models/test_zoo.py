"""Tests for torchslim.models: the registry, factories, MAC/param counts, pretrained loading, seed names."""

from __future__ import annotations

import re
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from torchslim.errors import ModelError
from torchslim.models import (
    MODELS,
    build_model,
    canonical_name,
    list_models,
    load_pretrained,
    resolve_spec,
    seed_param_names,
    torchvision_classifiers,
)
from torchslim.models.mobilenet_v1 import MobileNetV1
from torchslim.pruning.counting import profile_model
from torchslim.registry import Registry


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


def test_registry_rejects_duplicates_case_insensitively():
    registry: Registry[int] = Registry("widget")
    registry.register("Alpha", 1, aliases=("a1",))
    with pytest.raises(ValueError, match="widget 'alpha' is registered twice"):
        registry.register("alpha", 2)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("A1", 3)  # clashes with an alias
    with pytest.raises(ValueError, match="alias 'a1' is registered twice"):
        registry.add_alias("a1", "alpha")
    assert registry.get("ALPHA") == 1 and registry.get("A1") == 1
    assert registry.canonical("a1") == "alpha"
    assert registry.list() == ["alpha"]


def test_failed_registration_leaves_no_partial_entry():
    registry: Registry[int] = Registry("widget")
    registry.register("alpha", 1, aliases=("a1",))
    with pytest.raises(ValueError, match="alias 'a1' is registered twice"):
        registry.register("beta", 2, aliases=("a1",))
    assert "beta" not in registry
    assert registry.list() == ["alpha"]


def test_registry_decorator_and_unknown_message():
    registry: Registry = Registry("thing")

    @registry.register("Widget")
    def widget():
        return 42

    assert registry.get("widget") is widget
    with pytest.raises(KeyError) as info:
        registry.get("widgit")
    assert "unknown thing 'widgit'; did you mean widget?" in info.value.args[0]


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


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_pretrained_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    source = build_model("mobilenet_v1", num_classes=10)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(1)
    target = build_model("mobilenet_v1", num_classes=10)
    assert not torch.equal(target.fc.weight, source.fc.weight)
    assert load_pretrained(target, path) is target
    for key, tensor in target.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


def test_load_pretrained_accepts_nested_and_data_parallel_files(tmp_path):
    source = build_model("torchvision:resnet18", num_classes=3)
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = load_pretrained(build_model("torchvision:resnet18", num_classes=3), path)
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert torch.equal(target.fc.bias, source.fc.bias)


def test_load_pretrained_wrong_num_classes_names_the_first_mismatching_key(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(build_model("mobilenet_v1", num_classes=1000).state_dict(), path)
    with pytest.raises(ModelError) as info:
        load_pretrained(build_model("mobilenet_v1", num_classes=10), path)
    message = str(info.value)
    assert "shape mismatch at 'fc.weight'" in message
    assert "(1000, 1024)" in message and "(10, 1024)" in message
    assert str(path) in message


def test_load_pretrained_missing_and_unexpected_keys(tmp_path):
    state = build_model("mobilenet_v1", num_classes=10).state_dict()
    missing = dict(state)
    del missing["features.3.depthwise.bn.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ModelError, match="missing key 'features.3.depthwise.bn.running_var'"):
        load_pretrained(build_model("mobilenet_v1", num_classes=10), tmp_path / "missing.pth")
    extra = dict(state, **{"head.weight": torch.zeros(2), "head.bias": torch.zeros(2)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ModelError, match=r"unexpected key 'head.weight' \(2 in all\)"):
        load_pretrained(build_model("mobilenet_v1", num_classes=10), tmp_path / "extra.pth")


def test_load_pretrained_wrong_architecture_names_the_first_key(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(build_model("torchvision:resnet18", num_classes=10).state_dict(), path)
    with pytest.raises(ModelError, match="missing key 'features.0.conv.weight'"):
        load_pretrained(build_model("mobilenet_v1", num_classes=10), path)


def test_load_pretrained_bad_files(tmp_path):
    model = build_model("mobilenet_v1", num_classes=10)
    with pytest.raises(ModelError, match="does not exist"):
        load_pretrained(model, tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(ModelError, match="cannot read weights file"):
        load_pretrained(model, garbage)
    pickled = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), pickled)  # a whole module: weights_only refuses to unpickle it
    with pytest.raises(ModelError, match="cannot read weights file"):
        load_pretrained(model, pickled)
    not_tensors = tmp_path / "numbers.pth"
    torch.save({"a": 1}, not_tensors)
    with pytest.raises(ModelError, match="does not hold a state dict of tensors"):
        load_pretrained(model, not_tensors)


# --------------------------------------------------------------------------- seed names


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


def test_seed_names_empty_for_models_the_seed_did_not_know(factory_file):
    assert (
        seed_param_names("torchvision:mobilenet_v3_small", build_model("torchvision:mobilenet_v3_small"))
        == {}
    )
    assert seed_param_names(f"{factory_file}:make", build_model(f"{factory_file}:make")) == {}
    # torchvision ResNets share the ResNet34 naming scheme.
    r18 = seed_param_names("torchvision:resnet18", build_model("torchvision:resnet18"))
    assert sum(bool(re.match(".*branch.*_weights", s)) for s in r18.values()) == 8 * 2 + 3
