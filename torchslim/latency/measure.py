"""Measuring one layer alone: its latency on a runtime, the entry a latency table stores."""

from __future__ import annotations

import torch

from torchslim.export.timing import robust_ms, time_callable, torch_callable, torch_threads
from torchslim.latency.layers import ConvConfig, layer_module
from torchslim.latency.ort_profile import layer_kernel_ms


def measure_layer(config: ConvConfig, runtime: str, threads: int, *, warmup: int, repeats: int) -> float:
    """A low quantile (ms) of ``repeats`` timed runs of ``config``'s layer after ``warmup`` runs:
    wall-clock in PyTorch eager, kernel time from ORT's profiler in ONNX Runtime."""
    module = layer_module(config).eval()
    shape = (config.batch, config.in_channels) + (() if config.linear else (config.height, config.width))
    example = torch.randn(*shape)
    if runtime == "eager":
        with torch_threads(threads):
            result = time_callable(torch_callable(module, example), warmup=warmup, runs=repeats)
        return robust_ms(result.samples_ms)
    return layer_kernel_ms(module, example, threads, warmup, repeats)
