"""The combined recipes shipped as example configs (prune at epoch 0, fine-tune, int8 by PTQ or QAT) run
through the seed-style compress.py, shrunk to the tiny model and a few epochs."""

from __future__ import annotations

import runpy
import sys

import numpy as np
import pytest
import yaml

from tests.helpers import REPO, TINY_MODEL
from torchslim.export import OrtModel

CONFIGS = REPO / "examples" / "classification" / "pruning" / "configs"


def run_compress(argv: list[str]) -> int:
    saved = sys.argv
    sys.argv = [str(CONFIGS.parent / "compress.py"), *argv]
    try:
        runpy.run_path(str(CONFIGS.parent / "compress.py"), run_name="__main__")
        return 0
    except SystemExit as done:
        return int(done.code or 0)
    finally:
        sys.argv = saved


def shrunk(name: str, tmp_path, qat_start: int | None = None):
    """The example config with the tiny model's parameter names and no output paths outside tmp_path."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    config["strategies"]["uniform_pruning_strategy"]["pruned_params"] = ".*"
    config["pruners"]["pruner_1"]["round_to"] = 2
    if qat_start is not None:
        config["strategies"]["quantization_strategy"].update(
            start_epoch=qat_start, float_model_save_path=str(tmp_path / "float")
        )
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("name", "epochs", "qat_start"), [("mobilenet_v1_int8.yaml", 2, None), ("mobilenet_v1_qat.yaml", 3, 2)]
)
def test_the_example_recipe_runs_from_compress_py(name, epochs, qat_start, tiny_fmnist, tmp_path):
    config = shrunk(name, tmp_path, qat_start)
    code = run_compress(
        [
            "--config_file", str(config), "--model", TINY_MODEL, "--num_epochs", str(epochs),
            "--batch_size", "16", "--use_gpu", "False", "--data", tiny_fmnist,
            "--checkpoint-path", str(tmp_path / "ckpt"), "--input-size", "16", "--train-limit", "64",
            "--val-limit", "32", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    eval_model = tmp_path / "ckpt" / str(epochs - 1) / "eval_model"
    int8 = OrtModel(eval_model / "model.int8.onnx")
    assert int8(np.zeros((1, 3, 16, 16), np.float32)).shape == (1, 10)
    if qat_start is not None:
        assert (tmp_path / "float" / "manifest.json").is_file()
