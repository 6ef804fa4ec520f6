"""PostTrainingQuantStrategy in the combined recipe (prune at epoch 0, fine-tune, int8 at the end) and
the seed's MKLDNNPostTrainingQuantStrategy quantizing a saved model with no training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import TINY_MODEL
from tests.helpers.configs import compression_config, quantized_recipe
from torchslim.cli.compress_cmd import summary_table
from torchslim.compress.compressor import Compressor
from torchslim.config import parse_config
from torchslim.data import build_loaders
from torchslim.errors import ConfigError
from torchslim.export import OrtModel
from torchslim.export.pte import PTE_FILE, PteModel, executorch_available
from torchslim.models import load_model
from torchslim.quant.executorch_int8 import INT8_PTE_FILE
from torchslim.reporting.run_report import write_run_report

QUIET = {"progress": False, "log": lambda message: None}


def test_prune_fine_tune_then_int8_at_the_end(tiny_fmnist, tmp_path):
    quantizers = {
        "ptq": {"class": "PostTrainingQuantizer", "calibration_images": 48, "calibrate_method": "entropy"}
    }
    config = quantized_recipe(
        tmp_path / "ckpt",
        tiny_fmnist,
        quantize={"class": "PostTrainingQuantStrategy", "quantizer": "ptq"},
        epochs=2,
        sections={"quantizers": quantizers},
    )
    summary = Compressor(parse_config(config), **QUIET).run()
    assert [e["strategy"] for e in summary.events] == ["uniform", "quant"]
    assert summary.after.macs < summary.before.macs
    event = summary.events[-1]
    eval_model = tmp_path / "ckpt" / "1" / "eval_model"
    assert event["int8"]["path"] == str(eval_model / "model.int8.onnx")
    assert event["int8"]["calibration_images"] == 48 and event["int8"]["calibrate_method"] == "entropy"
    assert event["int8"]["top1_agreement"] >= 0.9
    assert "top-1 agreement with fp32" in summary_table(summary)
    # the int8 model is of the pruned, fine-tuned model: same outputs as its fp32 model within int8 error
    int8, fp32 = OrtModel(eval_model / "model.int8.onnx"), OrtModel(eval_model / "model.onnx")
    model, _ = load_model(eval_model, trusted=TINY_MODEL)
    assert (
        int8.input_shape[1:] == (3, 16, 16)
        and sum(p.numel() for p in model.parameters()) == summary.after.params
    )
    assert int8.path.stat().st_size < fp32.path.stat().st_size
    # the report's seed table gets the int8 row, with the accuracy the strategy measured in ORT
    _, rows = write_run_report(tmp_path / "ckpt", timing=False, trusted=TINY_MODEL)
    assert [row.label for row in rows] == ["baseline", "pruned (epoch 1)", "pruned (epoch 1) + int8"]
    assert (rows[2].top1, rows[2].top5) == (event["int8"]["top1"], event["int8"]["top5"])
    assert rows[2].macs == rows[1].macs and rows[2].size_bytes == int8.path.stat().st_size


def test_the_seed_strategy_quantizes_a_saved_model_without_training(tiny_fmnist, tmp_path):
    first = quantized_recipe(
        tmp_path / "ckpt", tiny_fmnist, quantize={"class": "PostTrainingQuantStrategy"}, epochs=1
    )
    Compressor(parse_config(first), **QUIET).run()
    seed_style = compression_config(
        None,
        strategies={
            "mkldnn": {
                "class": "MKLDNNPostTrainingQuantStrategy",
                "int8_model_save_path": str(tmp_path / "int8"),
            }
        },
        epochs=0,
        model=TINY_MODEL,
        data=tiny_fmnist,
        train={"input_size": 16, "device": "cpu", "val_limit": 32},
        changes={"compressor.init_model": str(tmp_path / "ckpt" / "0" / "eval_model")},
    )
    summary = Compressor(parse_config(seed_style), **QUIET).run()
    assert summary.epochs_run == [] and summary.events[-1]["strategy"] == "mkldnn"
    written = sorted(p.name for p in (tmp_path / "int8").iterdir())
    assert written == [
        "manifest.json",
        "model.int8.onnx",
        "model.onnx",
        "model.safetensors",
        "quantization.json",
    ]
    assert summary.events[-1]["int8"]["calibration_images"] == 256  # the quantizer's default


def test_without_a_folder_for_the_int8_model_the_config_names_the_key(tiny_fmnist):
    config = quantized_recipe(None, tiny_fmnist, quantize={"class": "PostTrainingQuantStrategy"})
    with pytest.raises(ConfigError, match=r"strategies\.quant\.int8_model_save_path: required when"):
        Compressor(parse_config(config), **QUIET).run()


def test_seed_keys_of_the_mkldnn_strategy_point_to_the_torchslim_ones(tiny_fmnist):
    config = quantized_recipe(
        None, tiny_fmnist, quantize={"class": "MKLDNNPostTrainingQuantStrategy", "fp32_model_path": "m"}
    )
    with pytest.raises(ConfigError, match=r"strategies\.quant\.fp32_model_path.*compressor\.init_model"):
        parse_config(config)


@pytest.mark.skipif(not executorch_available(), reason="the executorch extra is not installed")
def test_with_save_executorch_model_the_int8_model_is_also_an_executorch_program(tiny_fmnist, tmp_path):
    quantizers = {"ptq": {"class": "PostTrainingQuantizer", "calibration_images": 32}}
    int8_folder = tmp_path / "int8"  # a folder of its own: the final model is saved there afresh
    quantize = {
        "class": "PostTrainingQuantStrategy",
        "quantizer": "ptq",
        "int8_model_save_path": str(int8_folder),
    }
    config = quantized_recipe(
        tmp_path / "ckpt", tiny_fmnist, quantize=quantize, epochs=1, sections={"quantizers": quantizers}
    )
    config["compressor"]["save_executorch_model"] = True
    summary = Compressor(parse_config(config), **QUIET).run()
    int8 = PteModel(int8_folder / INT8_PTE_FILE)
    assert int8.input_shape == (1, 3, 16, 16)
    record = json.loads((int8_folder / "quantization.json").read_text())["executorch"]
    assert record["path"] == str(int8_folder / INT8_PTE_FILE) and record["dtype"] == "int8"
    assert record["size_bytes"] == int8.path.stat().st_size < (int8_folder / PTE_FILE).stat().st_size
    assert record["val_samples"] == 32 and 0 <= record["top1"] <= record["top5"] <= 100
    assert record["top1_agreement"] >= 0.8  # with fp32, on the 32 calibration images
    assert "ExecuTorch int8" in summary.events[-1]["int8_summary"]
    # the folder's fp32 program is the final model's, as the last eval model's program is
    images = next(iter(build_loaders(tiny_fmnist, batch_size=32, image_size=16).val_loader))[0].numpy()
    fp32 = PteModel(int8_folder / PTE_FILE)(images)
    np.testing.assert_allclose(
        fp32, PteModel(tmp_path / "ckpt" / "0" / "eval_model" / PTE_FILE)(images), atol=1e-4
    )
    # the int8 program is that model quantized: it agrees with fp32 and with its ONNX Runtime twin
    top1 = int8(images).argmax(1)
    assert np.mean(top1 == fp32.argmax(1)) >= 0.8
    assert np.mean(top1 == OrtModel(int8_folder / "model.int8.onnx")(images).argmax(1)) >= 0.8
