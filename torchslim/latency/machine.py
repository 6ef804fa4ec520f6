"""What a latency measurement depends on: the runtime, its version, the thread count and the CPU."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

from torchslim.errors import ConfigError

RUNTIMES = ("onnxruntime", "eager")  # what latency-aware planning measures and plans for
TIMING_RUNTIMES = (*RUNTIMES, "executorch")  # what models can be timed on
DEFAULT_THREADS = 2
_DECIDING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "fma")


def check_runtime(runtime: str, allowed: tuple[str, ...] = RUNTIMES) -> None:
    if runtime not in allowed:
        raise ConfigError(f"runtime must be one of {', '.join(allowed)}, got {runtime!r}")


def machine_fingerprint() -> str:
    """CPU model, core count and instruction-set flags that decide kernel choice, as one short string."""
    cpu = platform.processor() or platform.machine()
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = "+".join(f for f in line.split(":", 1)[1].split() if f in _DECIDING_FLAGS)
                break
    return f"{cpu}|{os.cpu_count()}|{flags}"


def runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime-{onnxruntime.__version__}"
    if runtime == "executorch":
        from torchslim.export.pte import executorch_version

        return executorch_version()
    return f"torch-{torch.__version__}"
