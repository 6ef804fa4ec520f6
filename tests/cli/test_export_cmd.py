"""``torchslim export`` to ExecuTorch, and ``infer`` / ``eval`` running the program it wrote: the same
answers as the PyTorch model, timed; flag mistakes are one line before anything is loaded or written."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import torchslim
from tests.helpers import TINY_MODEL
from tests.helpers.cli import run_main
from tests.helpers.tiny_models import tiny_net
from torchslim.cli.main import main
from torchslim.export.pte import PteModel
from torchslim.models import save_model

pytest.importorskip("executorch", reason="the executorch extra is part of make setup")


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, tiny_net_weights):
    model = tiny_net()
    model.load_state_dict(torch.load(tiny_net_weights))
    pruned = torchslim.prune(model.eval(), torch.zeros(1, 3, 32, 32), target_flops=0.3, round_to=4).model
    directory = tmp_path_factory.mktemp("saved") / "pruned"
    save_model(directory, pruned, TINY_MODEL, {"num_classes": 10}, input_size=32)
    return directory, pruned.eval()


@pytest.fixture(scope="module")
def exported(pruned_dir) -> dict:
    """``torchslim export --format executorch --json`` of the saved pruned model: its JSON report."""
    directory, _ = pruned_dir
    argv = ["export", "--model-path", str(directory), "--model", TINY_MODEL, "--format", "executorch"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([*argv, "--json"])
    assert code == 0
    return json.loads(stdout.getvalue())


def test_export_writes_a_program_that_matches_the_saved_model(pruned_dir, exported):
    directory, model = pruned_dir
    report = exported
    assert report["path"] == str(directory / "model.pte") and report["dtype"] == "fp32"
    assert report["max_abs_diff"] < 1e-4 and report["top1_agreement"] == 1.0
    images = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(PteModel(directory / "model.pte")(images), expected, atol=1e-4)


def test_infer_on_the_program_prints_classes_and_ms_per_sample(capsys, pruned_dir, exported, tmp_path):
    directory, model = pruned_dir
    if not (directory / "model.pte").is_file():
        run_main(
            capsys,
            ["export", "--model-path", str(directory), "--model", TINY_MODEL, "--format", "executorch"],
        )
    image = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(1).random((40, 40, 3)) * 255).astype(np.uint8)).save(image)
    argv = ["infer", "--model-path", str(directory / "model.pte"), "--images", str(image), str(image)]
    code, out, err = run_main(capsys, [*argv, "--runs", "3", "--warmup", "1"])
    assert code == 0, err
    assert "ms/sample (ExecuTorch, batch 1, 2 threads" in out
    assert out.count("a.png") == 2
    code, out, err = run_main(capsys, [*argv, "--runs", "3", "--warmup", "1", "--json"])
    payload = json.loads(out)
    assert payload["runtime"] == "executorch" and payload["ms_per_sample"] > 0
    assert len(payload["predictions"]) == 2 and len(payload["predictions"][0]["classes"]) == 5


def test_eval_of_the_program_equals_eval_of_the_pytorch_model(capsys, pruned_dir, tiny_fmnist):
    directory, _ = pruned_dir
    if not (directory / "model.pte").is_file():
        run_main(
            capsys,
            ["export", "--model-path", str(directory), "--model", TINY_MODEL, "--format", "executorch"],
        )
    results = {}
    for runtime in ("pytorch", "executorch"):
        argv = ["eval", "--model-path", str(directory), "--model", TINY_MODEL, "--data", tiny_fmnist]
        code, out, err = run_main(capsys, [*argv, "--runtime", runtime, "--json"])
        assert code == 0, err
        results[runtime] = json.loads(out)
    assert results["executorch"]["samples"] == results["pytorch"]["samples"] == 128
    assert results["executorch"]["top1"] == results["pytorch"]["top1"]
    assert results["executorch"]["top5"] == results["pytorch"]["top5"]


def test_an_int8_export_is_calibrated_on_the_training_images(capsys, pruned_dir, tiny_fmnist, tmp_path):
    directory, _ = pruned_dir
    output = tmp_path / "int8.pte"
    argv = ["export", "--model-path", str(directory), "--model", TINY_MODEL, "--format", "executorch"]
    argv += ["--int8", "--data", tiny_fmnist, "--calibration-images", "32", "--output", str(output), "--json"]
    code, out, err = run_main(capsys, argv)
    assert code == 0, err
    report = json.loads(out)
    assert report["dtype"] == "int8" and report["path"] == str(output) and output.is_file()
    assert report["top1_agreement"] >= 0.9


@pytest.mark.parametrize(
    ("extra", "exit_code", "message"),
    [
        (["--format", "onnx", "--int8"], 2, "--int8 goes with --format executorch"),
        (["--format", "executorch", "--int8"], 3, "--int8 needs calibration images"),
        (["--format", "executorch", "--output", "x.onnx"], 2, "writes a .pte file"),
        (["--format", "tflite"], 2, "--format"),
    ],
)
def test_flag_mistakes_are_one_line_and_write_nothing(
    capsys, pruned_dir, tmp_path, extra, exit_code, message
):
    directory, _ = pruned_dir
    before = sorted(p.name for p in directory.iterdir())
    argv = ["export", "--model-path", str(directory), "--model", TINY_MODEL, *extra]
    code, out, err = run_main(capsys, [a.replace("x.onnx", str(tmp_path / "x.onnx")) for a in argv])
    assert code == exit_code and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in directory.iterdir()) == before and not any(tmp_path.iterdir())


def test_a_model_without_an_output_folder_is_refused(capsys):
    code, _, err = run_main(capsys, ["export", "--model", TINY_MODEL, "--format", "executorch"])
    assert code == 2 and "--output is needed with --model" in err


def test_eval_of_a_folder_without_a_program_says_how_to_write_one(capsys, tmp_path):
    directory = tmp_path / "plain"
    save_model(directory, tiny_net(), TINY_MODEL, {"num_classes": 10}, input_size=32)
    code, _, err = run_main(capsys, ["eval", "--model-path", str(directory), "--runtime", "executorch"])
    assert (
        code == 4
        and "has no inference model model.pte" in err
        and "torchslim export --format executorch" in err
    )
