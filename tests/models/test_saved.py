"""Saved pruned models: JSON + safetensors only, reloaded without unpickling, in this and a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO
from tests.helpers.models import calibrate
from tests.helpers.oracle import NUM_CLASSES, assert_oracle, convs, outputs, pruned_case
from torchslim.cli import main
from torchslim.errors import ModelError
from torchslim.models import build_model, load_model, save_model
from torchslim.pruning.counting import profile_model
from torchslim.pruning.prune import prune

FACTORY_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
            down = nn.Conv2d(32, 64, 3, stride=2, padding=1)
            self.body = nn.Sequential(down, nn.BatchNorm2d(64), nn.ReLU())
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = self.body(self.stem(x))
            return self.fc(x.mean((2, 3)))

    def make(num_classes=1000):
        return Net(num_classes)
    """
)


FRESH_PROCESS_CHECK = textwrap.dedent(
    """
    import json, sys, torch
    from torchslim.models import load_model
    trusted, result = sys.argv[1], {}
    for directory in sys.argv[2:]:
        saved = torch.load(directory + ".expected.pt", weights_only=True)
        model, manifest = load_model(directory, trusted=trusted)
        with torch.no_grad():
            result[directory] = bool(torch.equal(model(saved["x"]), saved["y"]))
    print(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pruned resnet18 and a pruned user-factory model, saved side by side."""
    tmp_path = tmp_path_factory.mktemp("saved")
    _, resnet, x, size = pruned_case("torchvision:resnet18")
    factory = tmp_path / "user_net.py"
    factory.write_text(FACTORY_SOURCE)
    factory_name = f"{factory}:make"
    torch.manual_seed(0)
    user = calibrate(build_model(factory_name, num_classes=NUM_CLASSES), (4, 3, 32, 32))
    user_x = torch.randn(2, 3, 32, 32)
    user_result = prune(user, user_x, target_flops=0.5, round_to=1)
    assert abs(user_result.report.flops_reduction - 0.5) <= 0.01
    assert_oracle(user, user_result, user_x)
    cases = {
        "resnet18": ("torchvision:resnet18", resnet, x, size),
        "user": (factory_name, user_result, user_x, 32),
    }
    manifests = {}
    for key, (base, result, inputs, input_size) in cases.items():
        directory = tmp_path / key
        manifests[key] = save_model(
            directory, result.model, base, {"num_classes": NUM_CLASSES}, input_size=input_size
        )
        torch.save({"x": inputs, "y": outputs(result.model, inputs)}, tmp_path / f"{key}.expected.pt")
    return tmp_path, cases, manifests, factory_name


def test_saved_directory_holds_json_and_safetensors_only(saved):

    tmp_path, cases, manifests, _ = saved
    for key, (base, result, _, input_size) in cases.items():
        directory = tmp_path / key
        assert manifests[key]["model"] == base and manifests[key]["modules"]
        assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "model.safetensors"]
        on_disk = json.loads((directory / "manifest.json").read_text())
        assert on_disk["format"] == "torchslim.manifest/1" and on_disk["input_size"] == input_size
        assert on_disk["kwargs"] == {"num_classes": NUM_CLASSES}
        tensors = load_file(str(directory / "model.safetensors"))
        state = result.model.state_dict()
        assert set(tensors) == set(state)
        assert all(torch.equal(tensors[k], state[k]) for k in state)


def test_load_model_reproduces_outputs_without_unpickling(saved, monkeypatch):
    tmp_path, cases, _, factory_name = saved

    def refuse(*args, **kwargs):
        raise AssertionError("load_model must not unpickle")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "load", refuse)
        patch.setattr("pickle.load", refuse)
        patch.setattr("pickle.loads", refuse)
        for key, (base, result, inputs, _) in cases.items():
            loaded, manifest = load_model(tmp_path / key, trusted=base)
            assert not loaded.training
            assert torch.equal(outputs(loaded, inputs), outputs(result.model, inputs)), key
            shapes = [m.weight.shape for m in convs(loaded).values()]
            assert shapes == [m.weight.shape for m in convs(result.model).values()]
    # A user's own fresh instance can receive the saved sizes too.
    _, user_result, user_x, _ = cases["user"]
    again, _ = load_model(tmp_path / "user", model=build_model(factory_name, num_classes=NUM_CLASSES))
    assert torch.equal(outputs(again, user_x), outputs(user_result.model, user_x))


def test_saved_user_model_needs_its_factory_named(saved, capsys):

    tmp_path, cases, _, factory_name = saved
    with pytest.raises(ModelError, match="names user code"):
        load_model(tmp_path / "user")
    assert main(["flops", "--model-path", str(tmp_path / "user"), "--json"]) == 4
    assert "names user code" in capsys.readouterr().err
    assert main(["flops", "--model-path", str(tmp_path / "user"), "--model", factory_name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == cases["user"][1].report.macs_after


def test_flops_of_saved_model_in_a_fresh_process(saved):
    tmp_path, cases, _, _ = saved
    _, resnet, _, size = cases["resnet18"]
    done = subprocess.run(
        [sys.executable, "-m", "torchslim", "flops", "--model-path", str(tmp_path / "resnet18"), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["macs"] == resnet.report.macs_after == profile_model(resnet.model, size).macs
    assert payload["params"] == resnet.report.params_after
    assert payload["input_size"] == size and payload["model"] == "torchvision:resnet18"


@pytest.mark.slow
def test_saved_models_reproduce_outputs_in_a_fresh_process(saved):
    tmp_path, cases, _, factory_name = saved
    directories = [str(tmp_path / k) for k in cases]
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_CHECK, factory_name, *directories],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == dict.fromkeys(directories, True)
