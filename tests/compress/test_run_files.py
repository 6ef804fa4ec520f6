"""What each epoch writes with ``compressor.save_executorch_model``: the eval model's ExecuTorch program
beside its ONNX model, checked against the eval model; without ExecuTorch the key is a config error
before anything runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import TINY_MODEL
from tests.helpers.cli import run_main
from tests.helpers.configs import TINY_TRAIN, compression_config, uniform_strategy, write_config
from torchslim.compress.compressor import Compressor
from torchslim.config import parse_config, schema
from torchslim.data import build_loaders
from torchslim.export import OrtModel
from torchslim.export.pte import PTE_FILE, PteModel, executorch_available
from torchslim.models import load_model

QUIET = {"progress": False, "log": lambda message: None}
needs_executorch = pytest.mark.skipif(
    not executorch_available(), reason="the executorch extra is not installed"
)


def tiny_run(checkpoint, data: str, *, executorch: bool, epochs: int = 1) -> dict:
    """tiny_net at 16x16 on CPU, pruned -40% MACs at epoch 0, ``epochs`` epochs on a slice of ``data``."""
    return compression_config(
        checkpoint,
        strategies={"uniform": uniform_strategy(start_epoch=0)},
        epochs=epochs,
        model=TINY_MODEL,
        data=data,
        train=TINY_TRAIN,
        changes={"compressor.save_executorch_model": executorch},
    )


@needs_executorch
def test_each_eval_model_gets_an_executorch_program_that_matches_it(tiny_fmnist, tmp_path):
    Compressor(parse_config(tiny_run(tmp_path / "ckpt", tiny_fmnist, executorch=True)), **QUIET).run()
    eval_model = tmp_path / "ckpt" / "0" / "eval_model"
    program = PteModel(eval_model / PTE_FILE)
    assert program.input_shape == (1, 3, 16, 16)  # batch 1, the run's input size
    model, _ = load_model(eval_model, trusted=TINY_MODEL)
    images = next(iter(build_loaders(tiny_fmnist, batch_size=8, image_size=16).val_loader))[0]
    with torch.no_grad():
        expected = model.eval()(images).numpy()
    got = program(images.numpy())  # 8 images through the batch-1 program
    assert got.shape == expected.shape == (8, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()
    # the ONNX model is still there, and the same model
    np.testing.assert_allclose(OrtModel(eval_model / "model.onnx")(images.numpy()), got, atol=1e-4)


def test_off_by_default_and_a_left_over_program_is_removed(tiny_fmnist, tmp_path):
    config = tiny_run(tmp_path / "ckpt", tiny_fmnist, executorch=False)
    assert parse_config(config).compressor.save_executorch_model is False
    stale = tmp_path / "ckpt" / "0" / "eval_model" / PTE_FILE
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"a program of other weights")
    Compressor(parse_config(config), **QUIET).run()
    assert (stale.parent / "model.onnx").is_file() and not stale.exists()


def test_without_executorch_the_key_is_a_one_line_error_exit_4_and_nothing_runs(
    capsys, tiny_fmnist, tmp_path, monkeypatch
):
    monkeypatch.setattr(schema, "executorch_available", lambda: False)
    path = write_config(tmp_path / "run.yaml", tiny_run(tmp_path / "ckpt", tiny_fmnist, executorch=True))
    code, out, err = run_main(capsys, ["compress", "--config", str(path)])
    assert code == 4 and out == "" and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert "compressor.save_executorch_model: needs ExecuTorch, which is not installed" in line
    assert "pip install 'torchslim[executorch]'" in line and str(path) in line
    assert not (tmp_path / "ckpt").exists()
    # off, the key needs nothing
    assert (
        parse_config(tiny_run(None, tiny_fmnist, executorch=False)).compressor.save_executorch_model is False
    )
