"""ONNX Runtime static int8 quantization: agreement with fp32 for every calibration method, and the bad
inputs (non-finite data or activations, an already-int8 model) refused with nothing written."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tests.helpers.tiny_models import tiny_net
from torchslim.data import build_datasets
from torchslim.errors import DataError, ModelError
from torchslim.export import OrtModel, export_onnx
from torchslim.quant import CALIBRATE_METHODS, PtqOptions, calibration_images, int8_ops, quantize_onnx
from torchslim.quant.calibration import batches


class Overflowing(nn.Module):
    """Finite on any input, but its conv's activations overflow float32 to inf."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc((self.conv(x) * 1e38 * 1e3).mean((2, 3)))


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory, tiny_net_weights):
    torch.manual_seed(0)
    model = tiny_net()
    model.load_state_dict(torch.load(tiny_net_weights))
    path = tmp_path_factory.mktemp("fp32") / "model.onnx"
    export_onnx(model.eval(), torch.zeros(1, 3, 32, 32), path)
    return path


@pytest.fixture(scope="module")
def images(tiny_fmnist):
    train, _, _, _ = build_datasets(tiny_fmnist, image_size=32)
    return calibration_images(train, 96)


@pytest.mark.parametrize("method", CALIBRATE_METHODS)
def test_int8_agrees_with_fp32_on_the_calibration_slice(method, fp32_model, images, tmp_path):
    target = tmp_path / "model.int8.onnx"
    report = quantize_onnx(fp32_model, target, images, PtqOptions(calibrate_method=method))
    assert report.calibration_images == 96 and report.calibrate_method == method
    ops = int8_ops(onnx.load(str(target)))
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    # the report's numbers, recomputed here from both models
    fp32, int8 = run_batched(OrtModel(fp32_model), images), run_batched(OrtModel(target), images)
    assert report.top1_agreement == pytest.approx(np.mean(fp32.argmax(1) == int8.argmax(1)))
    assert report.max_logit_diff == pytest.approx(float(np.abs(fp32 - int8).max()), rel=0.05)
    assert report.top1_agreement >= 0.95
    assert 0 < report.max_logit_diff < 0.1 * float(np.abs(fp32).max())
    assert report.int8_bytes == target.stat().st_size < report.fp32_bytes


def test_per_channel_weights_have_one_scale_per_output_channel(fp32_model, images, tmp_path):
    per_channel = tmp_path / "per_channel.onnx"
    per_tensor = tmp_path / "per_tensor.onnx"
    quantize_onnx(fp32_model, per_channel, images, PtqOptions())
    quantize_onnx(fp32_model, per_tensor, images, PtqOptions(per_channel=False))

    def conv_weight_scale_sizes(path):
        graph = onnx.load(str(path)).graph
        tensors = {t.name: t for t in graph.initializer}
        return [
            int(np.prod(tensors[node.input[1]].dims))
            for node in graph.node
            if node.op_type == "DequantizeLinear"
            and len(tensors.get(node.input[0], onnx.TensorProto()).dims) == 4
        ]

    # tiny_net's convs have 16, 16, 16 and 32 filters
    assert sorted(conv_weight_scale_sizes(per_channel)) == [16, 16, 16, 32]
    assert conv_weight_scale_sizes(per_tensor) == [1, 1, 1, 1]


def test_non_finite_activations_are_refused_and_nothing_is_written(images, tmp_path):
    source = tmp_path / "overflowing.onnx"
    export_onnx(Overflowing().eval(), torch.zeros(1, 3, 32, 32), source, verify=False)
    for method in ("minmax", "entropy"):
        with pytest.raises(DataError, match="NaN or inf; nothing was written"):
            quantize_onnx(source, tmp_path / "int8.onnx", images, PtqOptions(calibrate_method=method))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overflowing.onnx"]


def test_non_finite_calibration_images_are_refused(fp32_model, images, tmp_path):
    broken = images.copy()
    broken[3, 0, 5, 5] = np.nan
    with pytest.raises(DataError, match="calibration images: 1 values are NaN or inf"):
        quantize_onnx(fp32_model, tmp_path / "int8.onnx", broken, PtqOptions())
    assert not list(tmp_path.iterdir())


def test_an_int8_model_is_not_quantized_again(fp32_model, images, tmp_path):
    first = tmp_path / "model.int8.onnx"
    quantize_onnx(fp32_model, first, images[:16], PtqOptions())
    with pytest.raises(ModelError, match=r"model.int8.onnx is already quantized \(DequantizeLinear x"):
        quantize_onnx(first, tmp_path / "again.onnx", images[:16], PtqOptions())
    assert not (tmp_path / "again.onnx").exists()


class WithUnquantizedOps(nn.Module):
    """A conv, then HardSwish (HardSigmoid in ONNX) and a mean, which ONNX Runtime has no int8 kernels for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = nn.functional.hardswish(self.conv(x))
        return self.fc((torch.sigmoid(y) * y).mean((2, 3)))


def test_ops_left_in_fp32_are_listed(images, tmp_path):
    source = tmp_path / "model.onnx"
    export_onnx(WithUnquantizedOps().eval(), torch.zeros(1, 3, 32, 32), source)
    report = quantize_onnx(source, tmp_path / "model.int8.onnx", images[:32], PtqOptions())
    listed = {item["op_type"] for item in report.fallback_ops}
    assert {"HardSigmoid", "ReduceMean"} <= listed
    assert "QLinearConv" not in listed and "QuantizeLinear" not in listed
    assert "ops left fp32: " in report.summary_line() and "HardSigmoid x1" in report.summary_line()


def run_batched(model, images):
    """Logits in the calibration batches, as the report computes them (ORT's int8 kernels round
    slightly differently at other batch sizes)."""
    return np.concatenate([model(part) for part in batches(images)])


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_take_a_count_that_is_no_multiple_of_the_batch(
    method, fp32_model, images, tmp_path
):
    report = quantize_onnx(
        fp32_model, tmp_path / "int8.onnx", images[:50], PtqOptions(calibrate_method=method)
    )
    assert report.calibration_images == 50 and report.top1_agreement >= 0.9


def test_by_default_every_conv_and_add_of_a_residual_block_runs_int8(fp32_model, images, tmp_path):
    """uint8 activations (the default): with int8 ones ORT left the block's convs and its add in fp32."""
    report = quantize_onnx(fp32_model, tmp_path / "model.int8.onnx", images, PtqOptions())
    assert not {"Conv", "Add"} & {item["op_type"] for item in report.fallback_ops}


def _weight_range(path) -> int:
    """The widest int8 weight magnitude in a QDQ model's quantized initializers."""
    model = onnx.load(str(path))
    widest = 0
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.INT8 and len(tensor.dims) == 4:
            widest = max(widest, int(np.abs(onnx.numpy_helper.to_array(tensor).astype(int)).max()))
    return widest


@pytest.mark.parametrize("reduce_range", [True, False])
def test_seven_bit_weights_still_agree_with_fp32_and_the_summary_says_so(
    reduce_range, fp32_model, images, tmp_path
):
    target = tmp_path / "model.int8.onnx"
    report = quantize_onnx(fp32_model, target, images, PtqOptions(reduce_range=reduce_range))
    assert report.reduce_range is reduce_range
    assert ("7-bit weights" in report.summary_line()) is reduce_range
    assert report.top1_agreement >= 0.95
    widest = _weight_range(target)
    assert widest <= 64 if reduce_range else widest > 64
