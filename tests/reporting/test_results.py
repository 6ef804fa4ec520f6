"""The seed's results table with an int8 row: its file size and recorded accuracy, ONNX Runtime time
only, and a caption naming the CPU and its int8-relevant instructions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torchslim.latency.compare as compare
from tests.helpers import TINY_MODEL
from tests.helpers.tiny_models import tiny_net
from torchslim.export import export_onnx
from torchslim.export.executorch_export import export_executorch
from torchslim.export.pte import executorch_available
from torchslim.models import save_model
from torchslim.quant import PtqOptions, quantize_onnx
from torchslim.quant.saved import write_record
from torchslim.reporting import results
from torchslim.reporting.results import (
    ResultRow,
    cpu_caption,
    fill_times,
    int8_row,
    results_table,
    speedup_line,
    time_models,
)

needs_executorch = pytest.mark.skipif(
    not executorch_available(), reason="the executorch extra is not installed"
)

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse avx2 avx512f avx512_vnni
"""


def test_the_caption_names_the_cpu_and_its_int8_instructions():
    assert cpu_caption(CPUINFO).startswith("CPU: Example CPU 9000 (")
    assert cpu_caption(CPUINFO).endswith("VNNI yes, AVX-512 yes, AMX no")
    assert cpu_caption("model name : Old\nflags : avx2 fma\n").endswith("VNNI no, AVX-512 no, AMX no")
    assert cpu_caption("flags : avx_vnni amx_tile\n").endswith("VNNI yes, AVX-512 no, AMX yes")


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    model = tiny_net().eval()
    directory = tmp_path_factory.mktemp("int8")
    save_model(directory, model, TINY_MODEL, {"num_classes": 10}, input_size=32)
    export_onnx(model, torch.zeros(1, 3, 32, 32), directory / "model.onnx")
    images = np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype(np.float32)
    quantize_onnx(directory / "model.onnx", directory / "model.int8.onnx", images, PtqOptions())
    write_record(directory, {"top1": 71.25, "top5": 97.5})
    return model, directory


def test_the_int8_row_has_its_file_size_and_recorded_accuracy(int8_dir):
    _, directory = int8_dir
    fp32 = ResultRow("-50%", 1000, 72.0, 98.0, 4000)
    record = json.loads((directory / "quantization.json").read_text())
    row = int8_row(fp32, directory / "model.int8.onnx", record)
    assert (row.label, row.macs, row.top1, row.top5) == ("-50% + int8", 1000, 71.25, 97.5)
    assert row.size_bytes == (directory / "model.int8.onnx").stat().st_size
    table = results_table([ResultRow("baseline", 2000, 73.0, 98.5, 8000), fp32, row])
    assert "-50% + int8" in table and "71.25/97.50" in table


def test_an_onnx_only_model_is_timed_in_onnx_runtime_only(int8_dir):
    model, directory = int8_dir
    models = {"fp32": (model, directory / "model.onnx"), "int8": (None, directory / "model.int8.onnx")}
    timings = time_models(models, 32, threads=1, rounds=2, executorch=False)
    assert list(timings) == ["onnxruntime", "eager"]
    assert set(timings["onnxruntime"].median_ms) == {"fp32", "int8"}
    assert set(timings["eager"].median_ms) == {"fp32"}
    assert timings["onnxruntime"].median_ms["int8"] > 0 and timings["eager"].median_ms["fp32"] > 0
    rows = {
        "fp32": ResultRow("fp32", 1000, 72.0, 98.0, 4000),
        "int8": ResultRow("int8", 1000, 71.0, 97.0, 1000),
    }
    fill_times(rows, timings)
    assert rows["int8"].torch_ms is None and rows["int8"].ort_ms > 0
    line = speedup_line(list(rows.values()))
    assert "int8" in line and "ONNX Runtime" in line and "eager" not in line


def test_the_executorch_column_is_there_whenever_the_extra_is(monkeypatch):
    rows = [
        ResultRow("baseline", 2000, 73.0, 98.5, 8000, 1.0, 0.5),
        ResultRow("-50%", 1000, 72.0, 98.0, 4000),
    ]
    rows[0].executorch_ms = 0.25
    with_column = results_table(rows, executorch=True).splitlines()
    assert with_column[0].split()[-2:] == ["ExecuTorch", "ms"]
    assert with_column[2].split()[-3:] == ["1.000", "0.500", "0.250"] and with_column[3].split()[-1] == "-"
    assert "ExecuTorch" not in results_table(rows, executorch=False)
    monkeypatch.setattr(results, "executorch_available", lambda: False)
    assert results_table(rows) == results_table(rows, executorch=False)  # as before the extra existed
    assert "| ExecuTorch ms |" not in results_table(rows, markdown=True)
    monkeypatch.setattr(results, "executorch_available", lambda: True)
    assert results_table(rows, markdown=True).splitlines()[0].endswith("| ONNX Runtime ms | ExecuTorch ms |")


@pytest.fixture(scope="module")
def programs(int8_dir):
    """ExecuTorch programs beside the fp32 and int8 ONNX models: batch 1 (what the table times), and
    one of batch 2. (The int8 row's program is an fp32 one here: the table times any program alike.)"""
    model, directory = int8_dir
    paths = {name: directory / name for name in ("model.pte", "model.int8.pte", "batch2.pte")}
    for name, batch in (("model.pte", 1), ("model.int8.pte", 1), ("batch2.pte", 2)):
        export_executorch(model, torch.randn(batch, 3, 32, 32), paths[name], verify=False)
    return paths


@needs_executorch
def test_executorch_times_the_programs_given_and_exports_the_rest(int8_dir, programs, monkeypatch):
    model, directory = int8_dir
    exported = []
    real = compare.export_executorch
    monkeypatch.setattr(
        compare,
        "export_executorch",
        lambda m, x, path, **kw: exported.append(x.shape) or real(m, x, path, **kw),
    )
    onnx = directory / "model.onnx"
    models = {"base": (model, onnx), "fp32": (model, onnx), "int8": (None, directory / "model.int8.onnx")}
    given = {
        "fp32": programs["model.pte"],
        "int8": programs["model.int8.pte"],
        "base": directory / "none.pte",
    }
    timings = time_models(models, 32, threads=1, rounds=2, pte_paths=given)
    assert list(timings) == ["onnxruntime", "eager", "executorch"]
    executorch = timings["executorch"]
    assert set(executorch.median_ms) == {"base", "fp32", "int8"} and executorch.threads == 1
    assert exported == [(1, 3, 32, 32)]  # the base model only (its file is missing): the others have programs
    rows = {label: ResultRow(label, 1000, None, None, 1) for label in models}
    fill_times(rows, timings)
    assert rows["int8"].torch_ms is None and rows["int8"].executorch_ms == executorch.median_ms["int8"]
    assert rows["fp32"].executorch_speedup == executorch.speedup["fp32"]
    line = speedup_line(list(rows.values()))
    int8 = rows["int8"]
    assert (
        f"int8 {int8.ort_speedup:.2f}x on ONNX Runtime, {int8.executorch_speedup:.2f}x in ExecuTorch" in line
    )
    # a program of another batch is not the table's: the int8 model gets no ExecuTorch time ("-"),
    # a model with a module is exported for the timing instead
    exported.clear()
    del models["fp32"], rows["fp32"]
    given = {"int8": programs["batch2.pte"], "base": programs["batch2.pte"]}
    timings = time_models(models, 32, threads=1, rounds=2, pte_paths=given)
    assert set(timings["executorch"].median_ms) == {"base"} and exported == [(1, 3, 32, 32)]
    fill_times(rows, timings)
    assert rows["int8"].executorch_ms is None and rows["int8"].cells(1000, executorch=True)[-1] == "-"


def test_without_the_extra_nothing_is_timed_on_executorch(int8_dir, monkeypatch):
    model, directory = int8_dir
    monkeypatch.setattr(results, "executorch_available", lambda: False)
    timings = time_models({"fp32": (model, directory / "model.onnx")}, 32, threads=1, rounds=2)
    assert list(timings) == ["onnxruntime", "eager"]
    row = ResultRow("fp32", 1000, None, None, 1)
    fill_times({"fp32": row}, timings)
    assert row.executorch_ms is None and row.executorch_speedup is None
