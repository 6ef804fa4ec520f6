"""``torchslim compress`` killed by SIGKILL after its first checkpoint, resumed; its eval and ONNX models."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

from tests.helpers import SEQUENTIAL_MODEL
from tests.helpers.cli import run_main
from tests.helpers.configs import sequential_model_config, write_config
from tests.helpers.processes import first_checkpoint_written, kill_when, popen_torchslim, torchslim
from torchslim.data import build_loaders
from torchslim.export import OrtModel
from torchslim.models import load_model


@pytest.fixture(scope="module")
def resumed_run(brightness_fmnist, tmp_path_factory) -> dict:
    """``torchslim compress`` killed by SIGKILL right after its first checkpoint, then restarted."""
    work = tmp_path_factory.mktemp("resume")
    ckpt = work / "ckpt"
    config = write_config(work / "tiny.yaml", sequential_model_config(brightness_fmnist, ckpt))
    command = ["compress", "--config", str(config), "--json"]
    first = popen_torchslim(*command, cwd=work)
    kill_when(first, first_checkpoint_written(ckpt))
    epochs_at_kill = sorted(p.name for p in ckpt.iterdir() if p.name.isdigit())
    second = torchslim(*command, cwd=work, timeout=300)
    return {
        "ckpt": ckpt,
        "first_returncode": first.returncode,
        "epochs_at_kill": epochs_at_kill,
        "second": second,
    }


def test_compress_resumes_after_sigkill(resumed_run):
    assert resumed_run["first_returncode"] == -signal.SIGKILL
    assert resumed_run["epochs_at_kill"] == ["0"], "the first run was killed too late for this test"
    second = resumed_run["second"]
    assert second.returncode == 0, second.stderr
    assert "resuming from checkpoint" in second.stderr
    assert "Traceback" not in second.stderr
    summary = json.loads(second.stdout)
    assert summary["resumed_from"] == str(resumed_run["ckpt"] / "0")
    assert summary["epochs_run"] == [1, 2]
    assert len(summary["events"]) == 1, summary["events"]
    event = summary["events"][0]
    assert event["epoch"] == 1 and event["strategy"] == "uniform_pruning_strategy"
    assert abs(event["flops_reduction"] - 0.5) <= 0.01
    assert summary["after"]["macs"] == event["macs_after"] < summary["before"]["macs"]
    ckpt = resumed_run["ckpt"]
    assert summary["last_checkpoint"] == str(ckpt / "2")
    for epoch in ("0", "1", "2"):
        assert (ckpt / epoch / "MANIFEST.json").is_file()
    assert not (ckpt / "3").exists()
    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in records]
    assert epochs[-2:] == [1, 2] and len(epochs) == len(set(epochs)), epochs


def test_final_eval_model_reproduces_logged_top1(resumed_run, brightness_fmnist, capsys):
    ckpt = resumed_run["ckpt"]
    records = {r["epoch"]: r for r in map(json.loads, (ckpt / "metrics.jsonl").read_text().splitlines())}
    code, out, err = run_main(
        capsys,
        [
            "eval",
            "--model-path",
            str(ckpt / "2" / "eval_model"),
            "--data",
            brightness_fmnist,
            "--json",
            "--model",
            SEQUENTIAL_MODEL,  # the manifest names user code: naming it says we trust it
        ],
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["samples"] == 50
    assert result["top1"] == pytest.approx(records[2]["top1"], abs=1e-9)


def test_inference_model_matches_eval_model(resumed_run, brightness_fmnist, capsys):
    eval_dir = resumed_run["ckpt"] / "2" / "eval_model"
    model, manifest = load_model(eval_dir, trusted=SEQUENTIAL_MODEL)
    model.eval()
    data = build_loaders(brightness_fmnist, batch_size=16, image_size=manifest["input_size"], num_workers=0)
    images, _ = next(iter(data.val_loader))
    with torch.no_grad():
        expected = model(images).numpy()
    got = OrtModel(eval_dir / "model.onnx")(images.numpy().astype(np.float32))
    assert got.shape == expected.shape == (16, 10)
    assert float(np.abs(got - expected).max()) < 1e-4

    results = {}
    for path, trust in ((eval_dir, ["--model", SEQUENTIAL_MODEL]), (eval_dir / "model.onnx", [])):
        code, out, err = run_main(
            capsys, ["eval", "--model-path", str(path), "--data", brightness_fmnist, "--json", *trust]
        )
        assert code == 0, err
        results[path.name] = json.loads(out)["top1"]
    assert results["model.onnx"] == results["eval_model"]
