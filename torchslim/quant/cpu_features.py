"""Which int8 instructions this CPU has: int8 speed, and whether ORT's U8S8 kernels can saturate.

On x86 without VNNI, ONNX Runtime's uint8-activation x int8-weight kernels multiply pairs into
16-bit sums that can saturate (255 * 127 * 2 > 32767); 7-bit weights (``reduce_range``) keep
every pair in range. With VNNI the products accumulate in 32 bits and full 8-bit weights are safe.
"""

from __future__ import annotations

import platform
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The flags /proc/cpuinfo lists for the first CPU (empty where there is no such file)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def u8s8_can_saturate(flags: set[str] | None = None) -> bool:
    """Whether ORT's uint8 x int8 kernels can saturate here: x86 with AVX2 but without VNNI."""
    flags = cpu_flags() if flags is None else flags
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    return x86 and "avx2" in flags and not flags & set(VNNI_FLAGS)
