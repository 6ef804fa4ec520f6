"""Quantizing a PyTorch model: export its fp32 ONNX model if missing, then ORT's static int8."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.export import export_onnx
from torchslim.quant.ptq import INT8_FILE, PtqOptions, PtqReport, quantize_onnx

FP32_FILE = "model.onnx"
RECORD_FILE = "quantization.json"


def quantize_model(
    model: nn.Module, input_size: int, directory: Path, images: np.ndarray, options: PtqOptions
) -> PtqReport:
    """``directory/model.int8.onnx`` from ``directory/model.onnx`` (exported from ``model`` when absent)."""
    directory = Path(directory)
    fp32 = directory / FP32_FILE
    if not fp32.is_file():
        cpu_model = copy.deepcopy(model).cpu().float()
        export_onnx(cpu_model, torch.zeros(1, 3, input_size, input_size), fp32)
    return quantize_onnx(fp32, directory / INT8_FILE, images, options)


def write_record(directory: Path, record: dict) -> Path:
    """``directory/quantization.json``: how the int8 model beside it was made and how it scored (read
    by ``torchslim report``); written to a temporary name first."""
    path = Path(directory) / RECORD_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(temporary, path)
    return path
