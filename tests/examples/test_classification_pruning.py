"""The seed-style scripts in examples/classification/pruning: flags, configs, eval and infer on a tiny net."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.helpers import REPO, SEED_CONFIGS
from tests.helpers.data import write_brightness_fashion_mnist
from tests.helpers.models import accuracy_of
from torchslim.config import load_config
from torchslim.data import build_loaders
from torchslim.export import export_onnx
from torchslim.models import load_model, save_model

EXAMPLE = REPO / "examples" / "classification" / "pruning"
SEED_FLAGS = [
    "--use_gpu",
    "--batch_size",
    "--model",
    "--pretrained_model",
    "--config_file",
    "--lr",
    "--lr_strategy",
    "--l2_decay",
    "--momentum_rate",
    "--num_epochs",
    "--step_epochs",
    "--total_images",
]
N_VAL = 20

TINY_FACTORY = """
from torch import nn


def factory(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )
"""


def run_script(name: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run an example script as ``__main__`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    saved = sys.argv
    sys.argv = [str(EXAMPLE / name), *argv]
    try:
        runpy.run_path(str(EXAMPLE / name), run_name="__main__")
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A saved tiny model (eval model + model.onnx) and Fashion-MNIST-layout data to run it on."""
    root = tmp_path_factory.mktemp("examples")
    data = write_brightness_fashion_mnist(root / "fmnist", 40, N_VAL)
    factory_file = root / "tiny_model.py"
    factory_file.write_text(TINY_FACTORY)
    namespace = runpy.run_path(str(factory_file))
    torch.manual_seed(0)
    model: nn.Module = namespace["factory"](num_classes=10).eval()
    model_dir = root / "ckpt" / "0" / "eval_model"
    save_model(model_dir, model, f"{factory_file}:factory", {"num_classes": 10}, input_size=28)
    export_onnx(model, torch.zeros(1, 3, 28, 28), model_dir / "model.onnx")
    return {"model_dir": model_dir, "data": f"fashion-mnist:{data}", "factory": f"{factory_file}:factory"}


def test_compress_help_lists_the_seed_flags(capsys):
    code, out, _ = run_script("compress.py", ["--help"], capsys)
    assert code == 0
    for flag in SEED_FLAGS:
        assert flag in out, flag
    assert "usage: compress.py" in out


def test_compress_translates_seed_flags_to_torchslim():
    namespace = runpy.run_path(str(EXAMPLE / "compress.py"))
    args, rest = namespace["parse"](
        [
            "--model",
            "MobileNetV2",
            "--use_gpu",
            "False",
            "--batch_size",
            "500",
            "--num_epochs",
            "2",
            "--step_epochs",
            "1",
            "2",
            "--total_images",
            "1281167",
            "--data",
            "fashion-mnist",
            "--json",
        ]
    )
    argv = namespace["torchslim_argv"](args, rest)
    assert argv[:3] == ["compress", "--config", str(EXAMPLE / "configs" / "mobilenet_v2.yaml")]
    joined = " ".join(argv)
    for part in (
        "--use_gpu False",
        "--batch_size 500",
        "--num_epochs 2",
        "--step_epochs 1 2",
        "--model MobileNetV2",
    ):
        assert part in joined
    assert argv[-3:] == ["--data", "fashion-mnist", "--json"]
    # no --model: the seed's default MobileNet(V1) and its config
    args, rest = namespace["parse"]([])
    assert namespace["torchslim_argv"](args, rest)[2] == str(EXAMPLE / "configs" / "mobilenet_v1.yaml")


def test_compress_unknown_model_without_config(capsys):
    code, _, err = run_script("compress.py", ["--model", "no_such_net"], capsys)
    assert code == 2 and "--config_file" in err and "Traceback" not in err


# model -> (batch size, lr strategy, epochs, l2 decay)
RECIPES = {
    "mobilenet_v1": (256, "piecewise_decay", 120, 3e-5),
    "mobilenet_v2": (500, "cosine_decay", 240, 4e-5),
    "resnet34": (256, "cosine_decay", 120, 1e-4),
}


@pytest.mark.parametrize("model", sorted(RECIPES))
def test_example_configs_hold_the_seed_recipes(model):
    config = load_config(EXAMPLE / "configs" / f"{model}.yaml")
    seed = load_config(SEED_CONFIGS / f"{model}.yaml")
    assert config.pruners == seed.pruners and config.strategies == seed.strategies
    assert config.compressor.strategies == seed.compressor.strategies
    batch_size, lr_strategy, epochs, l2_decay = RECIPES[model]
    train = config.train
    assert (train.batch_size, train.lr_strategy, train.l2_decay, train.lr) == (
        batch_size,
        lr_strategy,
        l2_decay,
        0.1,
    )
    assert config.compressor.epoch == epochs
    assert train.model == model and train.data.startswith("imagenet:")
    assert config.compressor.checkpoint_path == f"./checkpoints/{model}/"
    if model == "mobilenet_v1":
        assert train.step_epochs == [30, 60, 90]


def test_eval_script_on_a_tiny_model(tiny, capsys):
    code, out, err = run_script(
        "eval.py",
        [
            "--model_path",
            str(tiny["model_dir"]),
            "--model_name",
            "__model__",
            "--params_name",
            "__params__",
            "--data",
            tiny["data"],
            "--use_gpu",
            "False",
            "--model",
            tiny["factory"],
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert "ignored" in err
    result = json.loads(out)
    assert result["samples"] == N_VAL
    model, _ = load_model(tiny["model_dir"], trusted=tiny["factory"])  # the saved model, scored here
    val = build_loaders(tiny["data"], batch_size=8, image_size=28).val_loader
    assert result["top1"] == accuracy_of(model, val) and result["top5"] == accuracy_of(model, val, k=5)
    assert result["top1"] < result["top5"]  # the check can tell top-1 from top-5
    # a checkpoint root finds its newest eval model; the ONNX model scores the same
    root = str(tiny["model_dir"].parents[1])
    code, out_root, err = run_script(
        "eval.py", ["--model_path", root, "--data", tiny["data"], "--model", tiny["factory"]], capsys
    )
    assert code == 0, err
    assert f"top-1 {result['top1']:.2f}%" in out_root
    code, out_onnx, err = run_script(
        "eval.py",
        ["--model_path", str(tiny["model_dir"] / "model.onnx"), "--data", tiny["data"], "--json"],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out_onnx)["top1"] == result["top1"]


def test_infer_script_on_a_tiny_model(tiny, capsys):
    code, out, err = run_script(
        "infer.py",
        [
            "--model_path",
            str(tiny["model_dir"]),
            "--model_name",
            "__model__.infer",
            "--params_name",
            "__params__",
            "--data",
            tiny["data"],
            "--batch_size",
            "4",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert "ignored" in err
    result = json.loads(out)
    assert result["batch_size"] == 4 and result["ms_per_sample"] > 0
    assert [p["label"] for p in result["predictions"]] == [0, 1, 2, 3]
    assert all(len(p["classes"]) == 5 and 0 <= p["classes"][0] < 10 for p in result["predictions"])
    code, out, err = run_script(
        "infer.py", ["--model_path", str(tiny["model_dir"]), "--data", tiny["data"]], capsys
    )
    assert code == 0, err
    assert "ms/sample" in out


def test_run_sh_dry_run(tiny, tmp_path):
    """run.sh end to end (bash -> compress.py -> torchslim): without weights it warns and goes on."""
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [
            "bash",
            str(EXAMPLE / "run.sh"),
            "mobilenet_v1",
            "--dry-run",
            "--json",
            "--data",
            tiny["data"],
            "--input-size",
            "32",
            "--num-classes",
            "10",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "pretrain/mobilenet_v1.pth not found" in done.stderr
    (plan,) = json.loads(done.stdout)["strategies"]
    assert plan["matched_params"] == 13 and abs(plan["flops_reduction"] - 0.5) <= 0.01
    assert not (EXAMPLE / "checkpoints").exists() and list(tmp_path.iterdir()) == []
    bad = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "vgg16"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "usage" in bad.stderr
