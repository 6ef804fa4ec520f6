"""What the shared machine is doing around a timing: memory bandwidth and the hypervisor's steal time.

Issue 20 asks why batch-8 timings are bimodal. Two outside causes can slow a run without
showing in its own profile: other guests taking this VM's CPUs (the hypervisor reports that
as *steal* time in /proc/stat) and other guests loading the shared memory bus (a STREAM-like
copy loop slows down). :class:`StateMeter` records both around each comparison, so a slow
comparison can be told apart from a fast one by more than its own timings.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

COPY_BYTES = 64 * 2**20  # well past the L3 cache, so the copy streams from memory


def cpu_jiffies(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs since boot; None where /proc/stat is not Linux's."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except OSError:
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    values = [int(v) for v in fields[1:]]
    return values[7], sum(values[:8])  # user nice system idle iowait irq softirq steal


def steal_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time the hypervisor gave to other guests between two readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def copy_bandwidth_gbs(seconds: float = 0.3, nbytes: int = COPY_BYTES) -> float:
    """Best memory bandwidth (GB/s, bytes read plus written) of a one-thread numpy copy over ``seconds``."""
    source = np.ones(nbytes // 8)
    target = np.empty_like(source)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end or best == 0.0:
        started = time.perf_counter()
        np.copyto(target, source)
        best = max(best, 2 * nbytes / (time.perf_counter() - started) / 1e9)
    return best


class StateMeter:
    """Bandwidth before and after a stretch of timing, and the steal time during it."""

    def __enter__(self) -> StateMeter:
        self.bandwidth_before = copy_bandwidth_gbs()
        self._jiffies = cpu_jiffies()
        return self

    def __exit__(self, *exc) -> None:
        self.steal = steal_fraction(self._jiffies, cpu_jiffies())
        self.bandwidth_after = copy_bandwidth_gbs()

    def __str__(self) -> str:
        steal = "steal n/a" if self.steal is None else f"steal {self.steal:.1%}"
        return f"copy {self.bandwidth_before:.0f}/{self.bandwidth_after:.0f} GB/s, {steal}"

    def as_dict(self) -> dict:
        return {
            "copy_gbs": [self.bandwidth_before, self.bandwidth_after],
            "steal": self.steal,
        }
