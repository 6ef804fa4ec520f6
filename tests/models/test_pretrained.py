"""Loading weight files: round trips, nested and DataParallel files, errors naming the first bad key."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from torchslim.errors import ModelError
from torchslim.models import (
    build_model,
    load_pretrained,
)


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
