"""``--model timm:<name>`` through the commands: prune (verified, saved), flops/params on built and saved
models, eval, sensitivity, bench and compress, and the one-line errors (exit 4)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers.cli import run_main
from tests.helpers.configs import tiny_run_config
from torchslim.cli.main import main

timm = pytest.importorskip("timm")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "timm:resnet10t"
SIZE = ["--input-size", "32"]


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory) -> str:
    """A timm model pruned by the CLI, saved."""
    out = tmp_path_factory.mktemp("timm") / "pruned"
    argv = ["prune", "--model", MODEL, *SIZE, "--num-classes", "10", "--target-flops", "0.3"]
    assert main([*argv, "--round-to", "8", "--verify", "--output", str(out), "--json"]) == 0
    return str(out)


def test_prune_a_timm_model_verified_and_saved(pruned_dir):
    manifest = json.loads(open(os.path.join(pruned_dir, "manifest.json")).read())
    assert manifest["model"] == MODEL and manifest["kwargs"] == {"num_classes": 10}
    assert manifest["input_size"] == 32 and manifest["modules"]


def test_flops_of_built_and_saved_timm_models(pruned_dir, capsys):
    code, out, _ = run_main(capsys, ["flops", "--model", MODEL, *SIZE, "--num-classes", "10", "--json"])
    assert code == 0
    base = json.loads(out)
    code, out, _ = run_main(capsys, ["flops", "--model-path", pruned_dir, "--json"])
    assert code == 0
    saved = json.loads(out)
    assert saved["model"] == MODEL and saved["input_size"] == 32
    assert 0.65 < saved["macs"] / base["macs"] < 0.75  # -30% MACs, within the search's tolerance


def test_params_of_a_timm_model(capsys):
    code, out, _ = run_main(capsys, ["params", "--model", MODEL, "--pattern", r"layer1\..*", "--json"])
    payload = json.loads(out)
    assert code == 0 and payload["model"] == MODEL and payload["matched"] > 0


def test_eval_and_sensitivity_of_timm_models(pruned_dir, tiny_fmnist, capsys, tmp_path):
    code, out, err = run_main(
        capsys, ["eval", "--model-path", pruned_dir, "--data", tiny_fmnist, "--val-limit", "32", "--json"]
    )
    assert code == 0, err
    assert json.loads(out)["samples"] == 32
    argv = ["sensitivity", "--model", MODEL, "--num-classes", "10", "--data", tiny_fmnist, *SIZE]
    argv += ["--val-limit", "32", "--ratios", "0.5", "--device", "cpu", "--no-progress", "--json"]
    code, out, err = run_main(capsys, [*argv, "--output", str(tmp_path / "s.json")])
    assert code == 0, err
    assert len(json.loads(out)["groups"]) >= 2


def test_bench_latency_of_a_timm_model(capsys):
    argv = ["bench", "latency", "--model", MODEL, *SIZE, "--target-flops", "0.3", "--round-to", "8"]
    code, out, err = run_main(
        capsys, [*argv, "--runtime", "eager", "--rounds", "2", "--warmup", "0", "--json"]
    )
    assert code == 0, err
    assert 0.65 < json.loads(out)["macs_ratio"] < 0.75


def test_compress_a_timm_model(tiny_fmnist, tmp_path, capsys):
    config = tiny_run_config(tmp_path / "c.yaml", tmp_path / "ckpt", model=MODEL, data=tiny_fmnist)
    code, out, err = run_main(capsys, ["compress", "--config", config, "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["events"] and summary["events"][0]["flops_reduction"] > 0.3
    manifest = json.loads((tmp_path / "ckpt" / "0" / "eval_model" / "manifest.json").read_text())
    assert manifest["model"] == MODEL


@pytest.mark.parametrize(
    "argv, words",
    [
        (["flops", "--model", "timm:resnet10"], ["unknown timm model 'resnet10'", "resnet10t"]),
        (["models", "--timm", "resnet1*"], None),
    ],
)
def test_timm_errors_and_listing(argv, words, capsys):
    code, out, err = run_main(capsys, argv)
    if words is None:
        assert code == 0 and "timm:resnet10t" not in out and "resnet10t" in out
        return
    assert code == 4 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert all(word in err for word in words)


def test_without_timm_a_timm_model_is_one_line_exit_4(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)
    code, out, err = run_main(capsys, ["flops", "--model", MODEL])
    assert code == 4 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "pip install torchslim[timm]" in err


def test_pretrained_timm_weights_give_the_class_count_and_input_size(tmp_path, capsys):
    """The file holds a 3-class head (a 1000-class build would not load it); config.json says 48x48."""
    torch.manual_seed(0)
    path = tmp_path / "w.safetensors"
    state = timm.create_model("resnet10t", num_classes=3).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    (tmp_path / "config.json").write_text(json.dumps({"pretrained_cfg": {"input_size": [3, 48, 48]}}))
    code, out, err = run_main(capsys, ["flops", "--model", MODEL, "--pretrained", str(path), "--json"])
    assert code == 0, err
    assert json.loads(out)["input_size"] == 48
