"""timm models as ``timm:<name>``: building, names and errors, weights files with their own config,
and pruned timm models that rebuild from their manifest."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tests.helpers.models import calibrate
from torchslim.errors import ModelError
from torchslim.models import (
    build_model,
    build_pretrained,
    canonical_name,
    load_model,
    namespace_models,
    resolve_spec,
    save_model,
)
from torchslim.models.zoo import is_user_factory
from torchslim.pruning.prune import prune

timm = pytest.importorskip("timm")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the network

SMALL = "resnet10t"
SIZE = 64


def head(model: nn.Module) -> nn.Linear:
    return model.get_classifier()


def test_timm_prefix_builds_a_random_timm_model_with_its_config():
    model = build_model(f"timm:{SMALL}", num_classes=5)
    assert type(model).__module__.startswith("timm.")
    assert head(model).out_features == 5
    spec = resolve_spec(f"timm:{SMALL}")
    assert spec.input_size == timm.models.get_pretrained_cfg(SMALL).input_size[-1] == 176  # timm's, not 224
    assert spec.name == f"timm:{SMALL}"
    assert canonical_name(f"timm:{SMALL}") == f"timm:{SMALL}"
    assert not is_user_factory(f"timm:{SMALL}")
    assert resolve_spec("timm:convnext_atto.d2_in1k").input_size == 224


@pytest.mark.parametrize(
    "name, words",
    [
        ("timm:resnet10", ["unknown timm model 'resnet10'", "resnet10t", "torchslim models --timm"]),
        ("timm:convnext_atto.nope", ["no tag 'nope'", "d2_in1k"]),
    ],
)
def test_bad_timm_names_are_model_errors_with_close_matches(name, words):
    with pytest.raises(ModelError) as error:
        build_model(name)
    assert error.value.exit_code == 4
    assert "\n" not in str(error.value)
    for word in words:
        assert word in str(error.value)


def test_without_timm_the_error_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ModelError, match=r"pip install torchslim\[timm\]") as error:
        build_model(f"timm:{SMALL}")
    assert error.value.exit_code == 4
    with pytest.raises(ModelError, match=r"torchslim\[timm\]"):
        namespace_models("timm", "resnet")


def test_listing_timm_models_by_pattern():
    bare = namespace_models("timm", "convnext_at")
    assert bare == ["timm:convnext_atto", "timm:convnext_atto_ols", "timm:convnext_atto_rms"]
    assert namespace_models("timm", "convnext_at*") == bare
    assert namespace_models("timm", "no_such_model_*") == []
    assert len(namespace_models("timm", "*")) == len(timm.list_models())


def _save_weights(path, classes: int, config: dict | None = None) -> nn.Module:
    torch.manual_seed(0)
    source = timm.create_model(SMALL, pretrained=False, num_classes=classes)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    if config is not None:
        (path.parent / "config.json").write_text(json.dumps(config))
    return source.eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_gives_its_class_count_and_loads(tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    source = _save_weights(path, classes=7)
    built = build_pretrained(f"timm:{SMALL}", path, {})
    assert built.kwargs == {"num_classes": 7} and built.input_size is None
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(built.model.eval()(x), source(x))


def test_config_beside_the_weights_gives_the_input_size(tmp_path):
    path = tmp_path / "model.safetensors"
    _save_weights(
        path, classes=4, config={"architecture": SMALL, "pretrained_cfg": {"input_size": [3, 96, 96]}}
    )
    built = build_pretrained(f"timm:{SMALL}", path, {})
    assert (built.kwargs, built.input_size) == ({"num_classes": 4}, 96)


def test_a_class_count_the_file_contradicts_is_a_model_error(tmp_path):
    path = tmp_path / "weights.pth"
    _save_weights(path, classes=7)
    with pytest.raises(ModelError, match=r"shape mismatch at 'fc.weight'.*\(7, 512\)"):
        build_pretrained(f"timm:{SMALL}", path, {"num_classes": 10})


@pytest.mark.parametrize("name", [SMALL, "mobilenetv3_small_050", "convnext_atto", "ghostnet_050"])
def test_pruned_timm_model_rebuilds_from_its_manifest(tmp_path, name):
    torch.manual_seed(0)
    model = calibrate(build_model(f"timm:{name}", num_classes=6), (4, 3, SIZE, SIZE))
    x = torch.randn(2, 3, SIZE, SIZE)
    result = prune(model, x[:1], target_flops=0.3, round_to=4, verify=True)
    assert result.report.verified and result.report.groups_pruned > 0
    manifest = save_model(tmp_path / "m", result.model, f"timm:{name}", {"num_classes": 6}, input_size=SIZE)
    assert manifest["model"] == f"timm:{name}" and manifest["modules"]
    loaded, read = load_model(tmp_path / "m")
    assert read["model"] == f"timm:{name}" and read["input_size"] == SIZE
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))
