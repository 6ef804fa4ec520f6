"""The quantized model's outputs stay float: a logit range set by a few very confident calibration
images used to squeeze the ordinary logits into one or two int8 steps."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tests.helpers.tiny_models import tiny_net
from torchslim.export import OrtModel, export_onnx
from torchslim.quant import PtqOptions, quantize_onnx
from torchslim.quant.float_outputs import dequantized_outputs, keep_outputs_float


class HeavyTailedLogits(nn.Module):
    """Ordinary images give logits within about one unit; an image whose first channel is bright
    lights one feature that a large weight turns into a logit in the hundreds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8, 10)
        with torch.no_grad():
            self.conv.weight[7].zero_()
            self.conv.weight[7, 0] = 1.0
            self.conv.bias[7] = -3.0  # zero on N(0, 1) pixels, 3 on pixels of 6
            self.fc.weight[:, 7] = 0.0
            self.fc.weight[0, 7] = 300.0

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def heavy_tailed(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("heavy") / "model.onnx"
    export_onnx(HeavyTailedLogits().eval(), torch.zeros(1, 3, 16, 16), path)
    generator = np.random.default_rng(0)
    calibration = generator.normal(size=(32, 3, 16, 16)).astype(np.float32)
    calibration[0, 0] = 6.0  # the one confident image
    ordinary = generator.normal(size=(64, 3, 16, 16)).astype(np.float32)
    return path, calibration, ordinary


def _agreement(fp32, int8, images) -> float:
    return float(np.mean(OrtModel(fp32)(images).argmax(1) == OrtModel(int8)(images).argmax(1)))


def test_float_logits_keep_the_ranking_that_quantized_logits_lost(heavy_tailed, tmp_path):
    path, calibration, ordinary = heavy_tailed
    old = quantize_onnx(path, tmp_path / "old.onnx", calibration, PtqOptions(float_outputs=False))
    new = quantize_onnx(path, tmp_path / "new.onnx", calibration, PtqOptions())
    assert dequantized_outputs(onnx.load(old.path).graph)  # the logits went through int8
    assert not dequantized_outputs(onnx.load(new.path).graph)
    assert _agreement(path, old.path, ordinary) < 0.5
    assert _agreement(path, new.path, ordinary) >= 0.9


def test_removing_the_output_pair_leaves_a_valid_graph_with_the_same_output(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.onnx"
    export_onnx(tiny_net().eval(), torch.zeros(1, 3, 32, 32), path)
    images = np.random.default_rng(1).normal(size=(16, 3, 32, 32)).astype(np.float32)
    quantized = onnx.load(
        quantize_onnx(path, tmp_path / "q.onnx", images, PtqOptions(float_outputs=False)).path
    )
    names = [output.name for output in quantized.graph.output]
    assert keep_outputs_float(quantized) == 1 and keep_outputs_float(quantized) == 0
    onnx.checker.check_model(quantized)
    assert [output.name for output in quantized.graph.output] == names
    producer = next(node for node in quantized.graph.node if names[0] in node.output)
    assert producer.op_type == "Gemm"
