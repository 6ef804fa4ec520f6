"""A module called twice (torchvision BasicBlock's one ReLU after the first conv and after the residual
add) made torchao's x86 quantizer refuse the whole graph ("Input partition has more than one output
node"); each call now gets its own copy before capture, and such a model trains and exports as int8."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from torchslim.export import OrtModel
from torchslim.nn import eval_mode
from torchslim.quant import int8_ops
from torchslim.quant.module_calls import one_module_per_call
from torchslim.quant.qat import export_int8, prepare_qat


class SharedReluBlock(nn.Module):
    """A residual block as torchvision writes it: one ReLU module, called after conv1 and after the add."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn0(self.stem(x)))
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)) + x)
        return self.fc(out.mean((2, 3)))


def test_each_call_of_a_reused_module_gets_its_own_copy():
    torch.manual_seed(0)
    model = SharedReluBlock().eval()
    separated = one_module_per_call(model)
    calls = [n.target for n in separated.graph.nodes if n.op == "call_module" and "relu" in n.target]
    assert calls == ["relu", "relu_call2", "relu_call3"]
    assert set(separated.state_dict()) == set(model.state_dict()) and not separated.training
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(separated(x), model(x))


def test_a_model_without_reused_modules_is_left_as_it_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    assert one_module_per_call(model) is model


def test_qat_prepares_trains_and_exports_a_block_with_a_shared_relu(tmp_path):
    torch.manual_seed(0)
    qat = prepare_qat(SharedReluBlock(), torch.zeros(2, 3, 32, 32))  # raised ModelError before
    optimizer = torch.optim.SGD(qat.parameters(), lr=0.01)
    qat.train()
    for step in range(3):
        images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(qat(images), torch.arange(8) % 10)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = export_int8(qat, 32, tmp_path / "model.int8.onnx")
    ops = int8_ops(onnx.load(str(path)))
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with eval_mode(qat), torch.no_grad():
        expected = qat(x).numpy()
    got = OrtModel(path)(x.numpy())
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()
