"""OrtModel: errors that name the file, input checks, providers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.models import FeatureNet
from torchslim.errors import ConfigError, ModelError
from torchslim.export import (
    OrtModel,
    available_providers,
    export_onnx,
)


def test_ort_model_missing_file(tmp_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(ModelError, match="missing.onnx"):
        OrtModel(missing)


def test_ort_model_garbage_file(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf \x00\x01\x02" * 10)
    with pytest.raises(ModelError, match="garbage.onnx"):
        OrtModel(garbage)


def test_ort_model_bad_input_and_provider(tmp_path):
    target = tmp_path / "m.onnx"
    export_onnx(FeatureNet(width=4), torch.randn(1, 3, 8, 8), target, verify=False)
    ort_model = OrtModel(target)
    with pytest.raises(ModelError, match="m.onnx"):
        ort_model(np.zeros((1, 5, 8, 8), np.float32))
    with pytest.raises(ConfigError, match="NoSuchExecutionProvider"):
        OrtModel(target, providers=["NoSuchExecutionProvider"])
    assert "CPUExecutionProvider" in available_providers()
    assert ort_model.providers == ["CPUExecutionProvider"]
