"""QuantizationStrategy: QAT after pruning in one config (int8 QDQ model that ORT runs), a SIGKILL during
QAT resumed exactly, and the settings it refuses, each naming its key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers.configs import quantized_recipe, write_config
from tests.helpers.processes import kill_when, popen_torchslim, torchrun, torchslim
from torchslim.compress.compressor import Compressor
from torchslim.compress.strategies import build_strategy
from torchslim.config import parse_config
from torchslim.data import build_datasets
from torchslim.engine import load_checkpoint, read_jsonl
from torchslim.errors import ConfigError
from torchslim.export import OrtModel

QAT = {"class": "QuantizationStrategy", "start_epoch": 1, "weight_bits": 8, "activation_bits": 8}


def compress(config, *extra: str):
    return torchslim("compress", "--config", str(config), "--json", *extra, timeout=400)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_fmnist):
    root = tmp_path_factory.mktemp("qat-straight")
    config = write_config(root / "config.yaml", quantized_recipe(root / "ckpt", tiny_fmnist, quantize=QAT))
    result = compress(config)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "ckpt", json.loads(result.stdout)


def test_prune_then_qat_gives_an_int8_model_that_onnx_runtime_runs(straight_run, tiny_fmnist):
    ckpt, summary = straight_run
    assert [e.get("event", "prune") for e in summary["events"]] == [
        "prune",
        "quantization_aware_training",
        "qat_int8_export",
    ]
    assert summary["events"][0]["epoch"] == 0 and summary["events"][1]["epoch"] == 1
    assert summary["after"]["macs"] < summary["before"]["macs"]
    export = summary["events"][-1]["int8"]
    assert export["path"] == str(ckpt / "2" / "eval_model" / "model.int8.onnx")
    assert export["top1_agreement"] >= 0.9
    train, _, _, _ = build_datasets(tiny_fmnist, image_size=16)
    images = np.stack([train[i][0].numpy() for i in range(8)])
    int8, fp32 = OrtModel(export["path"])(images), OrtModel(ckpt / "2" / "eval_model" / "model.onnx")(images)
    assert int8.shape == fp32.shape == (8, 10)
    # the float model saved beside it is the QAT model without fake quantization: close, not equal
    assert 0 < np.abs(int8 - fp32).max() < 0.2 * np.abs(fp32).max()
    state, meta = load_checkpoint(ckpt / "2")
    assert state["strategies"]["quant"]["observers"]  # the observed ranges are checkpointed
    assert not any("activation_post_process" in key for key in state["model"])


def test_a_kill_during_qat_resumes_exactly(straight_run, tiny_fmnist, tmp_path):
    straight, straight_summary = straight_run
    config = write_config(
        tmp_path / "config.yaml", quantized_recipe(tmp_path / "ckpt", tiny_fmnist, quantize=QAT)
    )
    process = popen_torchslim("compress", "--config", str(config))
    kill_when(process, lambda: (tmp_path / "ckpt" / "1" / "MANIFEST.json").exists(), timeout=300)
    assert not (tmp_path / "ckpt" / "2").exists(), "killed too late for this test"
    result = compress(config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["epochs_run"] == [2]
    resumed, _ = load_checkpoint(tmp_path / "ckpt" / "2")
    expected, _ = load_checkpoint(straight / "2")
    for section in ("model", "optimizer"):
        assert resumed[section].keys() == expected[section].keys()
    for key, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    for key, tensor in expected["strategies"]["quant"]["observers"].items():
        assert torch.equal(tensor, resumed["strategies"]["quant"]["observers"][key]), key
    timing = {"images_per_s"}
    assert [
        {k: v for k, v in r.items() if k not in timing}
        for r in read_jsonl(tmp_path / "ckpt" / "metrics.jsonl")
    ] == [{k: v for k, v in r.items() if k not in timing} for r in read_jsonl(straight / "metrics.jsonl")]
    assert summary["after"] == straight_summary["after"]
    assert (
        summary["events"][-1]["int8"]["top1_agreement"]
        == straight_summary["events"][-1]["int8"]["top1_agreement"]
    )


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ({"weight_bits": 4}, "strategies.quant.weight_bits", "only 8 bits are supported"),
        ({"activation_bits": 16}, "strategies.quant.activation_bits", "only 8 bits are supported"),
        (
            {"activation_quantize_type": "range_abs_max"},
            "strategies.quant.activation_quantize_type",
            "moving_average_abs_max",
        ),
        ({"weight_quantize_type": "hist"}, "strategies.quant.weight_quantize_type", "channel_wise_abs_max"),
    ],
)
def test_unsupported_settings_are_config_errors_naming_the_key(change, key, problem, tiny_fmnist, tmp_path):
    config = quantized_recipe(tmp_path / "ckpt", tiny_fmnist, quantize={**QAT, **change})
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    assert f"{key}: " in str(info.value) and problem in str(info.value)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"end_epoch": 1}, "strategies.quant.end_epoch: quantization-aware training runs to the end"),
        ({"start_epoch": 3}, "strategies.quant.start_epoch: must be < compressor.epoch (3)"),
    ],
)
def test_a_qat_window_it_cannot_run_is_refused(change, problem, tiny_fmnist, tmp_path):
    config = parse_config(quantized_recipe(tmp_path / "ckpt", tiny_fmnist, quantize={**QAT, **change}))
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        build_strategy("quant", config.strategies["quant"], config)


def test_pruning_after_qat_started_is_refused(tiny_fmnist, tmp_path):
    config = quantized_recipe(tmp_path / "ckpt", tiny_fmnist, quantize={**QAT, "start_epoch": 0})
    config["strategies"]["uniform"]["start_epoch"] = 1
    with pytest.raises(ConfigError, match="strategy uniform prunes at epoch 1, after QAT starts"):
        Compressor(parse_config(config), progress=False, log=lambda message: None).run()


def test_qat_runs_data_parallel_under_torchrun(tiny_fmnist, tmp_path):
    config = write_config(
        tmp_path / "config.yaml", quantized_recipe(tmp_path / "ckpt", tiny_fmnist, quantize=QAT)
    )
    result = torchrun("-m", "torchslim", "compress", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    summary = json.loads(lines[0])
    assert summary["epochs_run"] == [0, 1, 2] and summary["events"][-1]["event"] == "qat_int8_export"
    assert [r["epoch"] for r in read_jsonl(tmp_path / "ckpt" / "metrics.jsonl")] == [0, 1, 2]
    int8 = OrtModel(summary["events"][-1]["int8"]["path"])
    assert int8(np.zeros((2, 3, 16, 16), np.float32)).shape == (2, 10)
