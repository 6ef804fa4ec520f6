"""``torchslim quantize`` on a saved model and on an fp32 .onnx file; its refusals (no calibration data,
an int8 model), and ``eval`` / ``infer`` refusing corrupt or unrelated .onnx files in one line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests.helpers import TINY_MODEL
from tests.helpers.processes import error_line
from tests.helpers.tiny_models import tiny_net
from torchslim.data import build_datasets
from torchslim.export import OrtModel
from torchslim.models import save_model
from torchslim.quant import calibration_images, int8_ops
from torchslim.quant.calibration import batches


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_net_weights):
    model = tiny_net()
    model.load_state_dict(torch.load(tiny_net_weights))
    directory = tmp_path_factory.mktemp("saved") / "model"
    save_model(directory, model, TINY_MODEL, {"num_classes": 10}, input_size=32)
    return directory


@pytest.fixture(scope="module")
def quantized(cli, saved_model, tiny_fmnist, tmp_path_factory):
    output = tmp_path_factory.mktemp("quantized") / "int8"
    run = cli(
        "quantize", "--model-path", str(saved_model), "--model", TINY_MODEL, "--data", tiny_fmnist,
        "--output", str(output), "--calibration-images", "64", "--calibrate-method", "percentile", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return output, json.loads(run.stdout)


def test_quantize_writes_the_int8_model_beside_the_fp32_one(quantized, tiny_fmnist):
    output, report = quantized
    names = sorted(p.name for p in output.iterdir())
    assert names == [
        "manifest.json",
        "model.int8.onnx",
        "model.onnx",
        "model.safetensors",
        "quantization.json",
    ]
    assert report["path"] == str(output / "model.int8.onnx") and report["calibrate_method"] == "percentile"
    assert (
        json.loads((output / "quantization.json").read_text())["top1_agreement"] == report["top1_agreement"]
    )
    assert int8_ops(onnx.load(str(output / "model.int8.onnx")))["QuantizeLinear"] > 0
    train, _, _, _ = build_datasets(tiny_fmnist, image_size=32)
    images = calibration_images(train, 64)
    fp32, int8 = (
        run_batched(OrtModel(output / "model.onnx"), images),
        run_batched(OrtModel(output / "model.int8.onnx"), images),
    )
    assert report["calibration_images"] == 64
    assert report["top1_agreement"] == pytest.approx(np.mean(fp32.argmax(1) == int8.argmax(1)))
    # computed in another process: the fp32 ops between int8 ones may round one quantization step apart
    assert report["max_logit_diff"] == pytest.approx(float(np.abs(fp32 - int8).max()), rel=0.25)
    assert report["top1_agreement"] >= 0.95


def test_eval_reads_the_int8_model(cli, quantized, tiny_fmnist):
    output, _ = quantized
    run = cli("eval", "--model-path", str(output / "model.int8.onnx"), "--data", tiny_fmnist, "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["samples"] == 128


def test_quantize_an_fp32_onnx_file(cli, quantized, tiny_fmnist, tmp_path):
    output, _ = quantized
    run = cli(
        "quantize",
        "--model-path",
        str(output / "model.onnx"),
        "--data",
        tiny_fmnist,
        "--output",
        str(tmp_path / "q"),
    )
    assert run.returncode == 0, run.stderr
    assert "top-1 agreement with fp32" in run.stdout and "ops left fp32: " in run.stdout
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [
        "model.int8.onnx",
        "model.onnx",
        "quantization.json",
    ]


def test_without_data_quantize_names_the_flag(cli, saved_model, tmp_path):
    run = cli(
        "quantize", "--model-path", str(saved_model), "--model", TINY_MODEL, "--output", str(tmp_path / "q")
    )
    error_line(run, "quantize", 3, "no calibration data", "--data")
    assert not (tmp_path / "q").exists()


def test_an_int8_model_is_refused(cli, quantized, tiny_fmnist, tmp_path):
    output, _ = quantized
    source = output / "model.int8.onnx"
    run = cli("quantize", "--model-path", str(source), "--data", tiny_fmnist, "--output", str(tmp_path / "q"))
    error_line(run, "quantize", 4, str(source), "is already quantized")
    assert list(tmp_path.iterdir()) == []


def unrelated_onnx(path):
    """A valid ONNX model that is no image classifier: one [N, 10] input, Relu."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "unrelated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("command", ["eval", "infer"])
@pytest.mark.parametrize("kind", ["corrupt", "unrelated"])
def test_eval_and_infer_refuse_a_bad_onnx_file_in_one_line(cli, command, kind, tiny_fmnist, tmp_path):
    path = tmp_path / "model.onnx"
    if kind == "corrupt":
        path.write_bytes(b"\x08\x07not an onnx model" * 10)
    else:
        unrelated_onnx(path)
    run = cli(command, "--model-path", str(path), "--data", tiny_fmnist)
    expected = "cannot load the model" if kind == "corrupt" else "not an image classifier"
    error_line(run, command, 4, str(path), expected)


def run_batched(model, images):
    """Logits in the calibration batches, as the report computes them (ORT's int8 kernels round
    slightly differently at other batch sizes)."""
    return np.concatenate([model(part) for part in batches(images)])
