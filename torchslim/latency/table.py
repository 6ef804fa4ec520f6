"""A cached lookup table of measured single-layer latencies, per runtime and machine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from torchslim.latency.layers import ConvConfig
from torchslim.latency.machine import DEFAULT_THREADS, check_runtime, machine_fingerprint, runtime_version
from torchslim.latency.measure import measure_layer

TABLE_FORMAT = "torchslim.latency-table/2"  # 2: ORT entries are kernel times from its profiler
CACHE_ENV = "TORCHSLIM_CACHE"


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root) / "latency" if root else Path.home() / ".cache" / "torchslim" / "latency"


class LatencyTable:
    """Measured latencies (ms) of single layers on one runtime, machine and thread count.

    ``lookup(config)`` returns the cached median or measures it (``repeats``
    timed runs after a warm-up). ``save()`` writes the table atomically; it is
    also written every ``autosave`` new measurements. The file name carries the
    runtime version, thread count and a hash of the machine fingerprint, so a
    table is never reused on another machine or runtime.
    """

    def __init__(
        self,
        runtime: str = "onnxruntime",
        *,
        threads: int = DEFAULT_THREADS,
        cache_dir: str | os.PathLike | None = None,
        repeats: int = 15,
        warmup: int = 3,
        autosave: int = 50,
        measure: bool = True,
    ) -> None:
        check_runtime(runtime)
        self.runtime = runtime
        self.threads = int(threads)
        self.repeats, self.warmup, self.autosave = repeats, warmup, autosave
        self.measure = measure
        self.machine = machine_fingerprint()
        self.version = runtime_version(runtime)
        digest = hashlib.sha1(self.machine.encode()).hexdigest()[:10]
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = self.cache_dir / f"{self.version}-t{self.threads}-{digest}-v2.json"
        self.entries: dict[str, float] = {}
        self.measured = 0  # new measurements made by this object
        self._unsaved = 0
        self._load()

    def _load(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if (data.get("machine"), data.get("runtime"), data.get("format")) == (
                self.machine,
                self.version,
                TABLE_FORMAT,
            ):
                self.entries = {str(k): float(v) for k, v in data.get("entries", {}).items()}

    def save(self) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": TABLE_FORMAT,
            "runtime": self.version,
            "threads": self.threads,
            "machine": self.machine,
            "unit": "ms",
            "entries": dict(sorted(self.entries.items())),
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(payload, indent=0))
        temporary.replace(self.path)
        self._unsaved = 0
        return self.path

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, config: ConvConfig) -> float:
        key = config.key()
        if key not in self.entries:
            if not self.measure:
                raise KeyError(f"{key} is not in the latency table {self.path} and measuring is off")
            self.entries[key] = self._measure(config)
            self.measured += 1
            self._unsaved += 1
            if self._unsaved >= self.autosave:
                self.save()
        return self.entries[key]

    def for_probes(self) -> LatencyTable:
        """The table block detection measures in: this runtime and machine on one thread.

        Which channel counts a kernel pads to does not depend on the thread count, and a
        single-threaded kernel is not stalled by a busy machine's scheduler the way a
        multi-threaded one is, so its staircase reads cleanly.
        """
        if self.threads == 1:
            return self
        return LatencyTable(
            self.runtime,
            threads=1,
            cache_dir=self.cache_dir,
            repeats=self.repeats,
            warmup=self.warmup,
            measure=self.measure,
        )

    def lookup_min(self, configs: list[ConvConfig], passes: int = 3) -> list[float]:
        """Like :meth:`lookup`, but configurations not yet in the table are measured in
        ``passes`` interleaved passes and the fastest pass is stored (for probes that must be
        comparable with each other on a busy machine)."""
        missing = [c for c in configs if c.key() not in self.entries]
        if missing and not self.measure:
            raise KeyError(f"{missing[0].key()} is not in the latency table {self.path} and measuring is off")
        best: dict[str, float] = {}
        for _ in range(passes if missing else 0):
            for config in missing:
                value = self._measure(config)
                best[config.key()] = min(value, best.get(config.key(), float("inf")))
        self.entries.update(best)
        self.measured += len(best)
        if best:
            self.save()
        return [self.entries[c.key()] for c in configs]

    def _measure(self, config: ConvConfig) -> float:
        return measure_layer(config, self.runtime, self.threads, warmup=self.warmup, repeats=self.repeats)
