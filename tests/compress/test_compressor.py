"""End-to-end tests of ``torchslim compress``: kill/resume, eval and inference models, seed configs,
config errors and flag overrides. Everything runs on a tiny model and a few hundred generated images."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from torchslim.cli.compress_cmd import config_from_args
from torchslim.cli.main import build_parser, main
from torchslim.config import load_config
from torchslim.errors import ConfigError
from torchslim.models import build_model

SEED_CONFIGS = Path(__file__).parent / "data" / "seed_configs"
N_TRAIN, N_VAL = 200, 50

TINY_FACTORY = """
from torch import nn


def factory(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )
"""


# ---------------------------------------------------------------- generated inputs


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def make_fashion_mnist(root: Path, n_train: int = N_TRAIN, n_val: int = N_VAL) -> Path:
    """IDX files in Fashion-MNIST's layout; class c is a noisy image of brightness 25*c."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n_train), ("t10k", n_val)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = labels[:, None, None] * 25 + rng.integers(0, 20, (count, 28, 28))
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def tiny_config(factory: str, data: str, checkpoint_path: Path, **changes) -> dict:
    """A seed-schema config for the tiny factory model; ``changes`` maps 'section.key' to a value
    (None deletes the key)."""
    config = {
        "version": 1.0,
        # round_to 8: the tiny model's layers are too narrow for the default 16 to reach -50% MACs
        "pruners": {
            "pruner_1": {
                "class": "StructurePruner",
                "pruning_axis": {"*": 0},
                "criterions": {"*": "l1_norm"},
                "round_to": 8,
            }
        },
        "strategies": {
            "uniform_pruning_strategy": {
                "class": "UniformPruneStrategy",
                "pruner": "pruner_1",
                "start_epoch": 1,
                "target_ratio": 0.5,
                "pruned_params": r"[0-9]+\.weight",
            }
        },
        "compressor": {
            "epoch": 3,
            "checkpoint_path": str(checkpoint_path),
            "strategies": ["uniform_pruning_strategy"],
        },
        "train": {
            "model": factory,
            "data": data,
            "batch_size": 32,
            "lr": 0.05,
            "lr_strategy": "cosine_decay",
            "input_size": 32,
            "num_workers": 0,
            "device": "cpu",
        },
    }
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(key)
        else:
            node[key] = value
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inputs")
    factory_file = root / "tiny_model.py"
    factory_file.write_text(TINY_FACTORY)
    data_dir = make_fashion_mnist(root / "fmnist")
    return {"factory": f"{factory_file}:factory", "data": f"fashion-mnist:{data_dir}", "data_dir": data_dir}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``torchslim ARGV`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- kill -9, then resume


@pytest.fixture(scope="module")
def resumed_run(inputs, tmp_path_factory) -> dict:
    """``torchslim compress`` killed by SIGKILL right after its first checkpoint, then restarted."""
    work = tmp_path_factory.mktemp("resume")
    ckpt = work / "ckpt"
    config = write_config(work / "tiny.yaml", tiny_config(inputs["factory"], inputs["data"], ckpt))
    command = [sys.executable, "-m", "torchslim", "compress", "--config", str(config), "--json"]
    first_err = work / "first.stderr"
    with open(first_err, "wb") as err:
        first = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 240
        while not (ckpt / "0" / "MANIFEST.json").exists():
            if first.poll() is not None:
                pytest.fail(
                    f"compress exited ({first.returncode}) before its first checkpoint:\n{first_err.read_text()}"
                )
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 240 s")
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    epochs_at_kill = sorted(p.name for p in ckpt.iterdir() if p.name.isdigit())
    second = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
    return {
        "ckpt": ckpt,
        "first_returncode": first.returncode,
        "epochs_at_kill": epochs_at_kill,
        "second": second,
    }


def test_compress_resumes_after_sigkill(resumed_run):
    assert resumed_run["first_returncode"] == -signal.SIGKILL
    assert resumed_run["epochs_at_kill"] == ["0"], "the first run was killed too late for this test"
    second = resumed_run["second"]
    assert second.returncode == 0, second.stderr
    assert "resuming from checkpoint" in second.stderr
    assert "Traceback" not in second.stderr
    summary = json.loads(second.stdout)
    assert summary["resumed_from"] == str(resumed_run["ckpt"] / "0")
    assert summary["epochs_run"] == [1, 2]
    assert len(summary["events"]) == 1, summary["events"]
    event = summary["events"][0]
    assert event["epoch"] == 1 and event["strategy"] == "uniform_pruning_strategy"
    assert abs(event["flops_reduction"] - 0.5) <= 0.01
    assert summary["after"]["macs"] == event["macs_after"] < summary["before"]["macs"]
    ckpt = resumed_run["ckpt"]
    assert summary["last_checkpoint"] == str(ckpt / "2")
    for epoch in ("0", "1", "2"):
        assert (ckpt / epoch / "MANIFEST.json").is_file()
    assert not (ckpt / "3").exists()
    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in records]
    assert epochs[-2:] == [1, 2] and len(epochs) == len(set(epochs)), epochs


def test_final_eval_model_reproduces_logged_top1(resumed_run, inputs, capsys):
    ckpt = resumed_run["ckpt"]
    records = {r["epoch"]: r for r in map(json.loads, (ckpt / "metrics.jsonl").read_text().splitlines())}
    code, out, err = run_cli(
        capsys,
        "eval",
        "--model-path",
        str(ckpt / "2" / "eval_model"),
        "--data",
        inputs["data"],
        "--json",
        "--model",
        inputs["factory"],  # the manifest names user code: naming it says we trust it
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["samples"] == N_VAL
    assert result["top1"] == pytest.approx(records[2]["top1"], abs=1e-9)


def test_inference_model_matches_eval_model(resumed_run, inputs, capsys):
    from torchslim.data import build_loaders
    from torchslim.export import OrtModel
    from torchslim.models import load_model

    eval_dir = resumed_run["ckpt"] / "2" / "eval_model"
    model, manifest = load_model(eval_dir, trusted=inputs["factory"])
    model.eval()
    data = build_loaders(inputs["data"], batch_size=16, image_size=manifest["input_size"], num_workers=0)
    images, _ = next(iter(data.val_loader))
    with torch.no_grad():
        expected = model(images).numpy()
    got = OrtModel(eval_dir / "model.onnx")(images.numpy().astype(np.float32))
    assert got.shape == expected.shape == (16, 10)
    assert float(np.abs(got - expected).max()) < 1e-4

    results = {}
    for path, trust in ((eval_dir, ["--model", inputs["factory"]]), (eval_dir / "model.onnx", [])):
        code, out, err = run_cli(
            capsys, "eval", "--model-path", str(path), "--data", inputs["data"], "--json", *trust
        )
        assert code == 0, err
        results[path.name] = json.loads(out)["top1"]
    assert results["model.onnx"] == results["eval_model"]


# ---------------------------------------------------------------- the seed's three configs


# model -> (seed regex, parameters it must select)
SEED_SELECTIONS = {
    "mobilenet_v1": (".*_sep_weights", 13),  # the 13 pointwise convs
    "mobilenet_v2": (".*[r|d]_weights", 33),  # 16 expand + 17 linear (project) 1x1 convs
    "resnet34": (".*branch.*_weights", 35),  # 32 block convs + 3 projection shortcuts
}


@pytest.mark.parametrize("model_name", sorted(SEED_SELECTIONS))
def test_seed_config_dry_run_selects_equivalent_layers(model_name, inputs, tmp_path, monkeypatch, capsys):
    regex, expected = SEED_SELECTIONS[model_name]
    path = SEED_CONFIGS / f"{model_name}.yaml"
    config = load_config(path)  # unchanged seed file
    (strategy,) = config.active_strategies()
    assert strategy.pruned_params == regex and strategy.target_ratio == 0.5
    assert config.compressor.checkpoint_path.startswith("./checkpoints")

    monkeypatch.chdir(tmp_path)  # the seed's relative checkpoint_path would land here
    code, out, err = run_cli(
        capsys,
        "compress",
        "--config",
        str(path),
        "--model",
        model_name,
        "--dry-run",
        "--json",
        "--input-size",
        "64",
        "--num-classes",
        "10",
        "--data",
        inputs["data"],
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["dry_run"] is True
    (plan,) = payload["strategies"]
    assert plan["matched_params"] == expected
    assert abs(plan["flops_reduction"] - 0.5) <= 0.01, plan["flops_reduction"]
    assert plan["macs_after"] < plan["macs_before"]
    assert list(tmp_path.iterdir()) == [], "a dry run wrote files"

    # the selected parameters are the layers the seed pruned
    model = build_model(model_name, num_classes=10)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    matched = plan["matched"]
    assert len(set(matched)) == expected
    assert all(len(shapes[n]) == 4 for n in matched), "only conv weights are selected"
    if model_name in ("mobilenet_v1", "mobilenet_v2"):
        assert all(shapes[n][2:] == (1, 1) for n in matched), "only 1x1 convs (no depthwise, no stem)"
    if model_name == "mobilenet_v2":
        assert len([n for n in matched if n.endswith(".conv.0.0.weight")]) == 16  # expand convs
    if model_name == "resnet34":
        assert all(n.startswith("layer") for n in matched) and "conv1.weight" not in matched
        assert len([n for n in matched if ".downsample." in n]) == 3


# ---------------------------------------------------------------- config errors


BAD_CONFIGS = {
    "unknown_key": ({"train.bogus_key": 1}, "train.bogus_key"),
    "wrong_type": ({"train.batch_size": "many"}, "train.batch_size"),
    "missing_pruner": (
        {"strategies.uniform_pruning_strategy.pruner": None},
        "strategies.uniform_pruning_strategy.pruner",
    ),
    "undefined_pruner": (
        {"strategies.uniform_pruning_strategy.pruner": "pruner_9"},
        "strategies.uniform_pruning_strategy.pruner",
    ),
    "regex_matches_nothing": (
        {"strategies.uniform_pruning_strategy.pruned_params": "no_such_layer.*"},
        "strategies.uniform_pruning_strategy.pruned_params",
    ),
    "target_ratio_one": (
        {"strategies.uniform_pruning_strategy.target_ratio": 1.0},
        "strategies.uniform_pruning_strategy.target_ratio",
    ),
    "target_ratio_zero": (
        {"strategies.uniform_pruning_strategy.target_ratio": 0},
        "strategies.uniform_pruning_strategy.target_ratio",
    ),
    "target_ratio_negative": (
        {"strategies.uniform_pruning_strategy.target_ratio": -0.5},
        "strategies.uniform_pruning_strategy.target_ratio",
    ),
}


def _assert_config_error(code: int, out: str, err: str, key_path: str, ckpt: Path) -> None:
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    assert errors[0].startswith("torchslim compress: error: ") and key_path in errors[0], errors[0]
    assert not ckpt.exists(), "files were written under checkpoint_path"


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_line_exit_2_and_writes_nothing(case, inputs, tmp_path, capsys):
    changes, key_path = BAD_CONFIGS[case]
    ckpt = tmp_path / "ckpt"
    config = write_config(
        tmp_path / "bad.yaml", tiny_config(inputs["factory"], inputs["data"], ckpt, **changes)
    )
    for extra in ([], ["--dry-run"]):
        code, out, err = run_cli(capsys, "compress", "--config", str(config), "--json", *extra)
        _assert_config_error(code, out, err, key_path, ckpt)


@pytest.mark.slow  # the in-process test above covers the same; this one adds a real interpreter
def test_regex_matching_nothing_in_a_real_process(inputs, tmp_path):
    """Found before training starts, exit 2 (not PruningError's 5 at start_epoch), no traceback."""
    ckpt = tmp_path / "ckpt"
    changes = {"strategies.uniform_pruning_strategy.pruned_params": "no_such_layer.*"}
    config = write_config(
        tmp_path / "bad.yaml", tiny_config(inputs["factory"], inputs["data"], ckpt, **changes)
    )
    done = subprocess.run(
        [sys.executable, "-m", "torchslim", "compress", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    _assert_config_error(done.returncode, done.stdout, done.stderr, "pruned_params", ckpt)
    assert "no_such_layer" in done.stderr and "epoch 0" not in done.stderr


# ---------------------------------------------------------------- flags override the config


def _args(*argv: str):
    return build_parser().parse_args(["compress", *argv])


def test_seed_flag_spellings_override_config(inputs, tmp_path):
    path = write_config(
        tmp_path / "c.yaml", tiny_config(inputs["factory"], inputs["data"], tmp_path / "ckpt")
    )
    config = config_from_args(
        _args(
            "--config_file",
            str(path),
            "--num_epochs",
            "7",
            "--batch_size",
            "50",
            "--use_gpu",
            "False",
            "--lr",
            "0.3",
            "--lr_strategy",
            "piecewise_decay",
            "--l2_decay",
            "1e-4",
            "--momentum_rate",
            "0.8",
            "--step_epochs",
            "2",
            "5",
            "--model",
            "MobileNetV2",
            "--total_images",
            "1281167",
        )
    )
    assert config.compressor.epoch == 7
    train = config.train
    assert (train.batch_size, train.device, train.lr, train.lr_strategy) == (
        50,
        "cpu",
        0.3,
        "piecewise_decay",
    )
    assert (train.l2_decay, train.momentum_rate, train.step_epochs) == (1e-4, 0.8, [2, 5])
    assert train.model == "MobileNetV2" and train.total_images == 1281167
    assert config_from_args(_args("--config", str(path), "--use_gpu", "True")).train.device == "cuda"
    assert config_from_args(_args("--config", str(path), "--num-epochs", "1")).compressor.epoch == 1
    untouched = config_from_args(_args("--config", str(path)))
    assert (untouched.compressor.epoch, untouched.train.batch_size) == (3, 32)
    with pytest.raises(ConfigError, match="--use_gpu"):
        config_from_args(_args("--config", str(path), "--use_gpu", "True", "--device", "cpu"))


def test_override_flags_apply_to_a_run(inputs, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    path = write_config(
        tmp_path / "c.yaml", tiny_config(inputs["factory"], inputs["data"], ckpt, **{"train.device": "auto"})
    )
    code, out, err = run_cli(
        capsys,
        "compress",
        "--config_file",
        str(path),
        "--num-epochs",
        "1",
        "--batch_size",
        "100",
        "--use_gpu",
        "False",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs_run"] == [0]  # compressor.epoch 3 overridden
    assert summary["events"] == []  # the strategy starts at epoch 1: never reached
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["0"]
    resolved = yaml.safe_load((ckpt / "config.resolved.yaml").read_text())
    assert resolved["compressor"]["epoch"] == 1
    assert resolved["train"]["batch_size"] == 100 and resolved["train"]["device"] == "cpu"
    assert "--num-epochs" not in err and "Traceback" not in err


def test_use_gpu_true_without_cuda_is_a_config_error(inputs, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    ckpt = tmp_path / "ckpt"
    path = write_config(tmp_path / "c.yaml", tiny_config(inputs["factory"], inputs["data"], ckpt))
    code, out, err = run_cli(capsys, "compress", "--config", str(path), "--use_gpu", "True", "--json")
    assert code == 2 and "CUDA" in err and "Traceback" not in err
    assert not ckpt.exists()


def test_latency_aware_run_weighs_validation_accuracy_among_measured_plans(
    inputs, tmp_path, capsys, monkeypatch
):
    from test_latency import staircase_cost

    from torchslim.latency.table import LatencyTable

    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(LatencyTable, "_measure", lambda self, config: staircase_cost(config, block=8))
    monkeypatch.setattr(LatencyTable, "for_probes", lambda self: self)
    config = tiny_config(
        inputs["factory"],
        inputs["data"],
        tmp_path / "ckpt",
        **{
            "pruners.pruner_1.align": "latency",
            "pruners.pruner_1.latency_speed_slack": 1.0,
            "strategies.uniform_pruning_strategy.start_epoch": 0,
            "compressor.epoch": 1,
        },
    )
    code, out, err = run_cli(
        capsys, "compress", "--config", str(write_config(tmp_path / "c.yaml", config)), "--json"
    )
    assert code == 0, err
    (event,) = json.loads(out)["events"]
    plan = event["latency_plan"]
    assert plan["chosen_by"] == "score" and plan["scores"] and plan["measured_speedup"] > 0
    best = max(plan["scores"], key=lambda entry: entry["score"])
    assert plan["chosen"] == best["plan"] and all(0 <= entry["score"] <= 100 for entry in plan["scores"])
    assert abs(event["flops_reduction"] - 0.5) <= 0.01
    config["compressor"]["checkpoint_path"] = str(tmp_path / "ckpt2")  # the human summary says the same
    code, out, err = run_cli(capsys, "compress", "--config", str(write_config(tmp_path / "c2.yaml", config)))
    assert code == 0, err
    assert re.search(
        r"latency-aware plan: the [a-z0-9. ]+ plan, measured kernel speedup [0-9.]+x, chosen by "
        r"validation top-1 among the near-fastest \([a-z0-9. ]+ [0-9.]+%",
        out,
    )  # plans are re-measured: any may win
