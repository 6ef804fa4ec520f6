"""The seed's results table with an int8 row: its file size and recorded accuracy, ONNX Runtime time
only, and a caption naming the CPU and its int8-relevant instructions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import TINY_MODEL
from tests.helpers.tiny_models import tiny_net
from torchslim.export import export_onnx
from torchslim.models import save_model
from torchslim.quant import PtqOptions, quantize_onnx
from torchslim.quant.saved import write_record
from torchslim.reporting.results import (
    ResultRow,
    cpu_caption,
    fill_times,
    int8_row,
    results_table,
    speedup_line,
    time_models,
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
    timings = time_models(models, 32, threads=1, rounds=2)
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
