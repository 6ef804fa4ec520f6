"""QAT with torch.export + torchao PT2E: the fake-quantized graph trains, its observer state restores
exactly, and the int8 QDQ ONNX model it exports runs in ONNX Runtime like the QAT model."""

from __future__ import annotations

import copy
import sys

import numpy as np
import onnx
import pytest
import torch

from tests.helpers.tiny_models import tiny_net
from torchslim.errors import ModelError
from torchslim.export import OrtModel
from torchslim.nn import eval_mode
from torchslim.quant import int8_ops, qat
from torchslim.quant.graph_facts import fp32_fallbacks
from torchslim.quant.qat import QatModel, export_int8, float_model_of, prepare_qat


def trained_steps(qat: QatModel, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(qat.parameters(), lr=0.01, momentum=0.9)
    qat.train()
    for _ in range(steps):
        images = torch.randn(8, 3, 32, 32, generator=generator)
        loss = torch.nn.functional.cross_entropy(qat(images), torch.arange(8) % 10)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture(scope="module")
def qat_model():
    torch.manual_seed(0)
    qat = prepare_qat(tiny_net(), torch.zeros(2, 3, 32, 32))
    trained_steps(qat, 4)
    return qat


def test_the_qat_graph_trains_and_switches_mode(qat_model):
    x = torch.randn(5, 3, 32, 32)
    with eval_mode(qat_model), torch.no_grad():
        first, second = qat_model(x), qat_model(x)
    assert first.shape == (5, 10) and torch.equal(first, second)  # eval: no observer updates
    float_model = float_model_of(qat_model).eval()
    assert float_model is not qat_model and float_model_of(float_model) is float_model
    # fake quantization moves the logits by about a quantization step, not more
    diff = (float_model(x) - first).abs().max().item()
    assert 0 < diff < 0.1 * first.abs().max().item()


def test_observer_state_restores_the_same_fake_quantized_model(qat_model):
    state = qat_model.observer_state()
    assert state and all("activation_post_process" in key for key in state)
    rebuilt = prepare_qat(copy.deepcopy(float_model_of(qat_model)), torch.zeros(2, 3, 32, 32))
    rebuilt.load_observer_state(state)
    x = torch.randn(3, 3, 32, 32)
    with eval_mode(qat_model), eval_mode(rebuilt), torch.no_grad():
        assert torch.equal(qat_model(x), rebuilt(x))
    with pytest.raises(ModelError, match="QAT state does not fit"):
        rebuilt.load_observer_state({})


def test_the_int8_onnx_model_is_qdq_and_runs_like_the_qat_model(qat_model, tmp_path):
    path = export_int8(qat_model, 32, tmp_path / "model.int8.onnx")
    ops = int8_ops(onnx.load(str(path)))
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with eval_mode(qat_model), torch.no_grad():
        expected = qat_model(x).numpy()
    got = OrtModel(path)(x.numpy())
    diff = np.abs(got - expected).max()
    assert diff < 0.05 * np.abs(expected).max()
    # wherever the QAT model's top-1 leads by more than twice that difference, ORT predicts the same
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * diff
    # (one more rounding point, the residual conv's output, makes ORT's integer kernels differ a little
    # more from fake quantization; the random tiny net's logits lie within a few thousandths)
    assert clear.sum() >= 5 and np.all(got.argmax(1)[clear] == expected.argmax(1)[clear])
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.9
    assert [p.name for p in tmp_path.iterdir()] == ["model.int8.onnx"]  # no temporary left


def test_per_tensor_weights_export_one_scale_per_weight(tmp_path):
    qat = prepare_qat(tiny_net(), torch.zeros(2, 3, 32, 32), per_channel=False)
    trained_steps(qat, 1)
    graph = onnx.load(str(export_int8(qat, 32, tmp_path / "int8.onnx"))).graph
    scales = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    per_weight = [scales.get(n.input[1], 1) for n in graph.node if n.op_type == "DequantizeLinear"]
    assert per_weight and max(per_weight) == 1


def test_without_torchao_qat_says_how_to_get_it(monkeypatch):
    for name in [n for n in sys.modules if n == "torchao" or n.startswith("torchao.")] + ["torchao"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    with pytest.raises(ModelError, match=r"needs torchao .*pip install 'torchslim\[quant\]'"):
        prepare_qat(tiny_net(), torch.zeros(2, 3, 32, 32))


def test_restored_observer_state_is_every_value_of_the_saved_one(qat_model):
    state = qat_model.observer_state()
    rebuilt = prepare_qat(copy.deepcopy(float_model_of(qat_model)), torch.zeros(2, 3, 32, 32))
    rebuilt.load_observer_state(state)
    restored = rebuilt.observer_state()
    assert restored.keys() == state.keys()
    assert all(torch.equal(restored[key], value) for key, value in state.items())


def test_a_graph_the_quantizer_cannot_annotate_is_a_one_line_model_error(monkeypatch):
    api = qat._torchao()

    def refuses(*args, **kwargs):
        raise ValueError("Input partition has more than one output node\n(torchao's own traceback)")

    monkeypatch.setattr(qat, "_torchao", lambda: {**api, "prepare": refuses})
    expected = r"x86 quantizer cannot annotate the model: ValueError: Input"
    with pytest.raises(ModelError, match=expected) as error:
        prepare_qat(tiny_net(), torch.zeros(2, 3, 32, 32))
    assert "\n" not in str(error.value)


def test_every_conv_and_add_of_the_int8_model_runs_int8_in_onnx_runtime(qat_model, tmp_path):
    """The residual conv's output is fake-quantized too: the x86 quantizer's conv-add fusion left it
    float, and ONNX Runtime ran that conv and the add in fp32."""
    path = export_int8(qat_model, 32, tmp_path / "model.int8.onnx")
    assert not {"Conv", "FusedConv", "Add"} & {f.op_type for f in fp32_fallbacks(path)}
