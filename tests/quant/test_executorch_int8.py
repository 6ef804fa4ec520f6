"""int8 ExecuTorch programs (XNNPACK quantizer, PT2E): a pruned, trained tiny model keeps its answers,
shrinks, and a bad calibration set is refused before anything is written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchslim
from tests.helpers.tiny_models import tiny_net
from torchslim.data import build_datasets
from torchslim.errors import DataError, ModelError
from torchslim.export.executorch_export import export_executorch
from torchslim.export.pte import PteModel
from torchslim.quant import calibration_images
from torchslim.quant.executorch_int8 import quantize_executorch

pytest.importorskip("executorch", reason="the executorch extra is part of make setup")


@pytest.fixture(scope="module")
def trained_pruned(tiny_net_weights):
    model = tiny_net()
    model.load_state_dict(torch.load(tiny_net_weights))
    result = torchslim.prune(model.eval(), torch.zeros(1, 3, 32, 32), target_flops=0.3, round_to=4)
    return result.model.eval()


@pytest.fixture(scope="module")
def images(tiny_fmnist) -> np.ndarray:
    train, val, _, _ = build_datasets(tiny_fmnist, image_size=32)
    return calibration_images(train, 64), calibration_images(val, 128, source="validation")


@pytest.fixture(scope="module")
def int8_program(trained_pruned, images, tmp_path_factory):
    calibration, _ = images
    path = tmp_path_factory.mktemp("int8") / "model.int8.pte"
    return path, quantize_executorch(trained_pruned, calibration, path)


def test_the_int8_program_agrees_with_fp32_on_held_out_images(int8_program, trained_pruned, images):
    path, report = int8_program
    _, held_out = images
    assert report.dtype == "int8" and path.is_file()
    assert report.top1_agreement >= 0.9  # on the calibration images, against fp32
    with torch.no_grad():
        fp32 = trained_pruned(torch.from_numpy(held_out)).numpy()
    int8 = PteModel(path)(held_out)
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.9
    scale = np.abs(fp32).max()
    assert np.abs(int8 - fp32).max() < 0.2 * scale  # close, but not fp32's exact answers
    assert np.abs(int8 - fp32).max() > 0


def test_int8_weights_take_less_room_than_fp32(int8_program, trained_pruned, tmp_path):
    _, report = int8_program
    fp32 = export_executorch(trained_pruned, torch.zeros(1, 3, 32, 32), tmp_path / "model.pte")
    assert report.size_bytes < fp32.size_bytes


def test_calibration_images_with_nan_are_refused_and_nothing_is_written(trained_pruned, images, tmp_path):
    calibration, _ = images
    bad = calibration.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="1 values are NaN or inf; nothing was written"):
        quantize_executorch(trained_pruned, bad, tmp_path / "model.int8.pte")
    with pytest.raises(ModelError, match="non-empty N x C x H x W"):
        quantize_executorch(trained_pruned, calibration[:0], tmp_path / "model.int8.pte")
    assert not any(tmp_path.iterdir())
