"""ONNX export: a single verified file, modes restored, nothing left behind on failure."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tests.helpers.models import FeatureNet, calibrate
from torchslim.errors import ModelError
from torchslim.export import (
    ExportReport,
    OrtModel,
    export_onnx,
    time_callable,
    torch_callable,
    verify_onnx,
)


def files_in(directory) -> set[str]:
    return set(os.listdir(directory))


def assert_single_file_onnx(path) -> None:
    proto = onnx.load(str(path), load_external_data=False)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer), (
        "weights must be stored inside the .onnx file"
    )


# --------------------------------------------------------------------------- export


def test_export_tiny_convnet_with_bn(tmp_path):
    model = calibrate(FeatureNet(), (8, 3, 16, 16), train=True)
    model.features[1].eval()  # a mixed-mode model: modes must come back module by module
    modes_before = [m.training for m in model.modules()]
    example = torch.randn(1, 3, 16, 16)
    target = tmp_path / "tiny.onnx"

    report = export_onnx(model, example, target)

    assert isinstance(report, ExportReport)
    assert report.path == target and target.is_file()
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    assert report.opset >= 11 and report.seconds > 0 and report.size_bytes == target.stat().st_size
    assert [m.training for m in model.modules()] == modes_before
    assert files_in(tmp_path) == {"tiny.onnx"}  # no temp file left behind
    assert_single_file_onnx(target)

    ort_model = OrtModel(target, threads=1)
    assert ort_model.input_name == "input"
    assert ort_model.input_shape == (None, 3, 16, 16)
    x = torch.randn(5, 3, 16, 16)  # another batch size: the batch dim is dynamic
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort_model(x.numpy())
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert np.abs(expected).max() > 1e-2  # the comparison is not trivially between zeros


def test_export_mobilenet_v2(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = calibrate(torchvision.models.mobilenet_v2(num_classes=10), (4, 3, 32, 32), train=True)
    assert model.training
    target = tmp_path / "mnv2.onnx"

    report = export_onnx(model, torch.randn(1, 3, 32, 32), target)

    assert model.training, "the model's training mode must be restored"
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-3
    assert files_in(tmp_path) == {"mnv2.onnx"}
    assert_single_file_onnx(target)

    x = torch.randn(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    got = OrtModel(target)(x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert np.abs(expected).max() > 1e-3


def test_export_dynamo_exporter(tmp_path):
    model = calibrate(FeatureNet(width=4), (4, 3, 8, 8))
    target = tmp_path / "dyn.onnx"
    report = export_onnx(model, torch.randn(2, 3, 8, 8), target, exporter="dynamo")
    assert report.exporter == "dynamo"
    assert files_in(tmp_path) == {"dyn.onnx"}  # no external .data file
    assert_single_file_onnx(target)
    assert OrtModel(target).input_shape[0] is None
    assert not model.training


def test_export_static_batch_and_names(tmp_path):
    model = FeatureNet(width=4).eval()
    target = tmp_path / "sub" / "static.onnx"  # missing parent directories are created
    report = export_onnx(
        model, torch.randn(1, 3, 8, 8), target, dynamic_batch=False, input_name="img", output_name="out"
    )
    assert report.max_abs_diff is not None
    ort_model = OrtModel(target)
    assert ort_model.input_name == "img" and ort_model.output_name == "out"
    assert ort_model.input_shape == (1, 3, 8, 8)


def test_export_without_verify_and_explicit_opset(tmp_path):
    report = export_onnx(
        FeatureNet(width=4), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx", verify=False, opset=17
    )
    assert report.max_abs_diff is None
    assert report.opset == 17


def test_export_copies_non_float32_model_and_leaves_it_alone(tmp_path):
    model = FeatureNet(width=4).eval().to(torch.float64)
    export_onnx(model, torch.randn(1, 3, 8, 8, dtype=torch.float64), tmp_path / "m.onnx")
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert OrtModel(tmp_path / "m.onnx")(np.zeros((2, 3, 8, 8), np.float32)).dtype == np.float32


def test_export_rejects_unknown_exporter(tmp_path):
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(FeatureNet(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx", exporter="magic")
    assert files_in(tmp_path) == set()


def test_verify_onnx_detects_a_different_model(tmp_path):
    torch.manual_seed(0)
    model_a = calibrate(FeatureNet(), (8, 3, 16, 16))
    model_b = calibrate(FeatureNet(), (8, 3, 16, 16), seed=1)
    example = torch.randn(1, 3, 16, 16)
    target = tmp_path / "a.onnx"
    export_onnx(model_a, example, target)

    assert verify_onnx(target, model_a, example) < 1e-4
    with pytest.raises(ModelError, match="max diff") as info:
        verify_onnx(target, model_b, example)
    assert str(target) in str(info.value)


def test_verify_onnx_missing_file(tmp_path):
    with pytest.raises(ModelError, match="nope.onnx"):
        verify_onnx(tmp_path / "nope.onnx", FeatureNet(), torch.randn(1, 3, 8, 8))


class CountingNet(nn.Module):
    """Its output depends on a Python counter that tracing freezes: ONNX cannot match."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x) * float(self.calls)


def test_mismatching_export_raises_and_writes_nothing(tmp_path):
    target = tmp_path / "count.onnx"
    with pytest.raises(ModelError, match="max diff"):
        export_onnx(CountingNet(), torch.randn(1, 3, 8, 8), target)
    assert files_in(tmp_path) == set()


class RaisingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("side effect failed")


def test_failed_export_leaves_no_file(tmp_path):
    target = tmp_path / "bad.onnx"
    with pytest.raises(ModelError, match="side effect failed") as info:
        export_onnx(RaisingNet(), torch.randn(1, 3, 8, 8), target)
    assert str(target) in str(info.value)
    assert not target.exists()
    assert files_in(tmp_path) == set()


def test_failed_export_keeps_existing_file(tmp_path):
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"previous export")
    with pytest.raises(ModelError):
        export_onnx(RaisingNet(), torch.randn(1, 3, 8, 8), target, exporter="torchscript")
    assert target.read_bytes() == b"previous export"
    assert files_in(tmp_path) == {"keep.onnx"}


# --------------------------------------------------------------------------- OrtModel


# --------------------------------------------------------------------------- timing


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_export_and_timing(tmp_path):
    model = calibrate(FeatureNet(width=4), (4, 3, 8, 8)).cuda()
    example = torch.randn(1, 3, 8, 8, device="cuda")
    export_onnx(model, example, tmp_path / "m.onnx")
    assert next(model.parameters()).is_cuda  # the export worked on a CPU copy
    result = time_callable(torch_callable(model, example, device="cuda"), warmup=1, runs=3)
    assert result.runs == 3
