"""``torchslim report``: the seed's results table and plots for a compression run (a tiny hand-made run)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.helpers import TINY_MODEL
from tests.helpers.tiny_models import tiny_net
from torchslim.cli import main
from torchslim.engine import append_jsonl, save_checkpoint
from torchslim.export import export_onnx
from torchslim.export.executorch_export import export_executorch
from torchslim.export.pte import PTE_FILE, executorch_available
from torchslim.latency import compare
from torchslim.latency.compare import time_runtimes
from torchslim.models import make_manifest, save_model
from torchslim.pruning.counting import profile_model
from torchslim.pruning.prune import prune
from torchslim.quant import INT8_FILE, PtqOptions, quantize_onnx
from torchslim.quant.executorch_int8 import INT8_PTE_FILE
from torchslim.quant.saved import write_record
from torchslim.reporting import results
from torchslim.reporting.results import results_table
from torchslim.reporting.run_report import load_run, run_models, run_rows, write_run_report

PNG = b"\x89PNG\r\n\x1a\n"
PHASES = 3 if executorch_available() else 2  # ORT, eager, and ExecuTorch whenever the extra is installed


@pytest.fixture
def run_dir(tmp_path):
    """Two epochs of a run that pruned tiny_net by half at epoch 0, as the compressor lays it out."""
    torch.manual_seed(0)
    base = tiny_net()
    base_profile = profile_model(base, 32)
    pruned = prune(base, torch.randn(1, 3, 32, 32), target_flops=0.5, round_to=2).model
    manifest = make_manifest(TINY_MODEL, {"num_classes": 10}, pruned)
    root = tmp_path / "run"
    before = {
        "macs": base_profile.macs,
        "params": base_profile.params,
        "size_bytes": base_profile.size_bytes,
        "top1": 81.5,
        "top5": 99.0,
    }
    event = {
        "strategy": "uniform",
        "epoch": 0,
        "macs_before": base_profile.macs,
        "macs_after": profile_model(pruned, 32).macs,
        "flops_reduction": 0.5,
        "top1_after_prune": 40.0,
    }
    for epoch in (0, 1):
        record = {
            "epoch": epoch,
            "train_loss": 1.0 - 0.2 * epoch,
            "train_top1": 60.0 + epoch,
            "lr": 0.01,
            "images_per_s": 100.0,
            "macs": event["macs_after"],
            "params": 1,
            "top1": 70.0 + 5 * epoch,
            "top5": 98.0,
            "val_loss": 0.9 - 0.1 * epoch,
        }
        meta = {
            "format": "torchslim.checkpoint/1",
            "epoch": epoch,
            "model": TINY_MODEL,
            "manifest": manifest,
            "metrics": record,
            "before": before,
            "events": [event],
            "strategies": {},
        }
        save_checkpoint(root / str(epoch), tensors={"model": pruned.state_dict()}, meta=meta)
        append_jsonl(root / "metrics.jsonl", record)
        save_model(
            root / str(epoch) / "eval_model",
            pruned,
            TINY_MODEL,
            {"num_classes": 10},
            input_size=32,
            manifest=manifest,
        )
    return root


def test_report_writes_markdown_and_plots(capsys, run_dir, tmp_path):
    output = tmp_path / "out" / "report.md"
    code = main(
        [
            "report",
            "--run",
            str(run_dir),
            "--model",
            TINY_MODEL,
            "--output",
            str(output),
            "--no-timing",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    payload = json.loads(out)
    base, final = payload["rows"]
    assert base["label"] == "baseline" and base["top1"] == 81.5
    assert final["top1"] == 75.0 and 0.4 < final["flops_removed"] < 0.6
    assert final["size_bytes"] < base["size_bytes"]
    text = output.read_text()
    assert "| baseline |" in text and "pruned (epoch 1)" in text and "-5" in text
    assert "## Pruning events" in text and "## Per epoch" in text
    for name in ("report_history.png", "report_channels.png"):
        assert (output.parent / name).read_bytes()[:8] == PNG
        assert f"]({name})" in text


def test_report_default_output_is_in_the_run_and_epoch_dir_works(capsys, run_dir):
    assert main(["report", "--run", str(run_dir / "0"), "--model", TINY_MODEL, "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert (run_dir / "report.md").is_file() and "baseline" in out and "epoch 0" in out


def test_report_times_both_models(run_dir, monkeypatch):
    timed = []

    def recorded(*args, **kwargs):
        timed.append(time_runtimes(*args, **kwargs))
        return timed[-1]

    monkeypatch.setattr(results, "time_runtimes", recorded)
    run = load_run(run_dir)
    base, final = run_models(run, trusted=TINY_MODEL)
    rows = run_rows(run, base, final, timing=True, threads=1, rounds=2)
    # Each row shows the medians of its own model's PyTorch and ONNX Runtime timings, ORT timed first.
    timings = {runtime: comparison for phase in timed for runtime, comparison in phase.items()}
    assert list(timings) == ["onnxruntime", "eager", "executorch"][: len(timed)] and len(timed) == PHASES
    assert all(t.rounds == 2 and t.threads == 1 for t in timings.values())
    for row, label in zip(rows, ("baseline", "final"), strict=True):
        assert (row.torch_ms, row.ort_ms) == (
            timings["eager"].median_ms[label],
            timings["onnxruntime"].median_ms[label],
        )
        assert row.ort_speedup == timings["onnxruntime"].speedup[label]
    assert results_table(rows, markdown=True).count("\n") == 3


def test_report_refuses_user_code_not_named(capsys, run_dir):
    code = main(["report", "--run", str(run_dir), "--no-timing"])
    assert code != 0 and "--model" in capsys.readouterr().err


def test_report_of_a_directory_without_checkpoints(capsys, tmp_path):
    code = main(["report", "--run", str(tmp_path), "--no-timing"])
    err = capsys.readouterr().err
    assert code != 0 and "no checkpoint" in err


@pytest.mark.skipif(not executorch_available(), reason="the executorch extra is not installed")
def test_the_report_times_the_eval_models_programs_in_executorch(run_dir, monkeypatch):
    eval_dir = run_dir / "1" / "eval_model"
    run = load_run(run_dir)
    base, final = run_models(run, trusted=TINY_MODEL)
    export_executorch(final, torch.randn(1, 3, 32, 32), eval_dir / PTE_FILE, verify=False)
    # the int8 models PostTrainingQuantStrategy leaves with save_executorch_model (the "int8" program
    # is a copy of the fp32 one here: the report times any program alike)
    images = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    export_onnx(final, torch.zeros(1, 3, 32, 32), eval_dir / "model.onnx")
    quantize_onnx(eval_dir / "model.onnx", eval_dir / INT8_FILE, images, PtqOptions())
    shutil.copyfile(eval_dir / PTE_FILE, eval_dir / INT8_PTE_FILE)
    write_record(eval_dir, {"top1": 70.0, "top5": 97.0, "executorch": {"top1": 69.5, "top5": 96.5}})
    exported = []
    real = compare.export_executorch
    monkeypatch.setattr(
        compare, "export_executorch", lambda m, x, path, **kw: exported.append(m) or real(m, x, path, **kw)
    )
    timed = []

    def recorded(*args, **kwargs):
        timed.append(time_runtimes(*args, **kwargs))
        return timed[-1]

    monkeypatch.setattr(results, "time_runtimes", recorded)
    output, rows = write_run_report(run_dir, timing=True, threads=1, rounds=2, trusted=TINY_MODEL)
    executorch = timed[-1]["executorch"]

    def size(model):
        return sum(p.numel() for p in model.parameters())

    assert [size(m) for m in exported] == [size(base)] != [size(final)]  # the others have their programs
    assert [r.executorch_ms for r in rows] == [executorch.median_ms[k] for k in ("baseline", "final", "int8")]
    int8 = rows[2]
    assert int8.label.endswith("+ int8") and int8.torch_ms is None and (int8.top1, int8.top5) == (70, 97)
    text = output.read_text()
    assert (
        "| ONNX Runtime ms | ExecuTorch ms |" in text and "then ExecuTorch with the XNNPACK delegate" in text
    )
    assert f"{rows[1].executorch_speedup:.2f}x in ExecuTorch" in text
    assert f"{int8.executorch_speedup:.2f}x in ExecuTorch" in text
    assert (
        "its ExecuTorch time is `model.int8.pte`'s (XNNPACK's quantizer, calibrated on the same images; "
        "its top-1/top-5 69.50/96.50)" in text
    )
