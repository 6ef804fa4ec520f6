"""The sensitivity table: metric per (group, ratio), its JSON file format, merging."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchslim.errors import PruningError

FORMAT = "torchslim.sensitivity/1"
DEFAULT_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MATCH_KEYS = ("model", "fingerprint", "criterion", "metric", "data", "samples", "recalibrated")


def ratio_key(ratio: float) -> str:
    """The JSON key of a ratio: ``0.1`` -> ``"0.1"`` (4 significant decimals)."""
    return f"{round(float(ratio), 4):g}"


def ratios_from_delta(delta: float) -> list[float]:
    """``delta_rate`` -> the scanned ratios: 0.1 -> 0.1 ... 0.9; 0.2 -> 0.2 ... 0.8."""
    if not 0.0 < delta < 1.0:
        raise PruningError(f"delta_rate must be in (0, 1), got {delta}")
    count = int(math.floor(1.0 / delta + 1e-9))
    ratios = [round(delta * i, 4) for i in range(1, count + 1)]
    return [r for r in ratios if r < 1.0 - 1e-9]


# ----------------------------------------------------------------------------- the table


@dataclass
class SensitivityTable:
    """The metric per (group, ratio) plus what the scan ran on; :meth:`to_dict` is the JSON file."""

    model: str
    fingerprint: str
    criterion: str
    metric: str
    data: str
    samples: int
    recalibrated: bool = False  # measured after the run's after-prune hook (batch-norm re-estimation)
    base_metric: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    groups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    # -- file format -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "criterion": self.criterion,
            "metric": self.metric,
            "data": self.data,
            "samples": self.samples,
            "recalibrated": self.recalibrated,
            "base_metric": self.base_metric,
            "sizes": dict(self.sizes),
            "groups": {
                name: dict(sorted(r.items(), key=lambda kv: float(kv[0]))) for name, r in self.groups.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> SensitivityTable:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PruningError(f"{source} is not a torchslim sensitivity table (expected format {FORMAT!r})")
        try:
            return cls(
                model=str(data["model"]),
                fingerprint=str(data["fingerprint"]),
                criterion=str(data["criterion"]),
                metric=str(data["metric"]),
                data=str(data["data"]),
                samples=int(data["samples"]),
                recalibrated=bool(data.get("recalibrated", False)),
                base_metric=None if data.get("base_metric") is None else float(data["base_metric"]),
                sizes={str(k): int(v) for k, v in data.get("sizes", {}).items()},
                groups={
                    str(name): {
                        ratio_key(float(r)): {"metric": float(v["metric"]), "loss": float(v["loss"])}
                        for r, v in ratios.items()
                    }
                    for name, ratios in data.get("groups", {}).items()
                },
            )
        except (KeyError, TypeError, ValueError) as error:
            raise PruningError(
                f"{source}: malformed sensitivity table ({type(error).__name__}: {error})"
            ) from None

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same directory, then rename over ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | Path) -> SensitivityTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PruningError(f"cannot read sensitivity table {path}: {error}") from None
        return cls.from_dict(data, str(path))

    # -- queries ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in MATCH_KEYS}

    def mismatches(self, other: SensitivityTable) -> list[str]:
        """``key: ours != theirs`` for every identity key that differs."""
        return [
            f"{k}: {getattr(self, k)!r} != {getattr(other, k)!r}"
            for k in MATCH_KEYS
            if getattr(self, k) != getattr(other, k)
        ]

    def has(self, group: str, ratio: float) -> bool:
        return ratio_key(ratio) in self.groups.get(group, {})

    def record(self, group: str, ratio: float, metric: float) -> dict[str, float]:
        base = self.base_metric if self.base_metric is not None else metric
        loss = (base - metric) / base if base > 0 else base - metric
        entry = {"metric": float(metric), "loss": float(loss)}
        self.groups.setdefault(group, {})[ratio_key(ratio)] = entry
        return entry

    def curve(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        """(ratios, losses) of ``group``, starting at (0, 0), sorted, losses made non-decreasing.

        Removing more channels of one layer cannot really help; a dip is noise of
        the validation slice, so the curve keeps the running maximum.
        """
        points = sorted((float(r), v["loss"]) for r, v in self.groups.get(group, {}).items())
        ratios = np.array([0.0] + [r for r, _ in points])
        losses = np.maximum.accumulate(np.array([0.0] + [max(loss, 0.0) for _, loss in points]))
        return ratios, losses


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of every parameter and buffer (names, shapes, values): which weights a table is for."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def open_table(path: str | Path | None, fresh: SensitivityTable) -> SensitivityTable:
    """The table at ``path`` if it is for the same model, weights, criterion, metric and data; else ``fresh``.

    A file that exists but describes another scan is an error rather than being
    overwritten: it may hold hours of work. Delete it or choose another path.
    """
    if path is None or not Path(path).exists():
        return fresh
    table = SensitivityTable.load(path)
    differences = table.mismatches(fresh)
    if differences:
        raise PruningError(
            f"sensitivity table {path} belongs to another scan ({'; '.join(differences)}); "
            "delete it or choose another file"
        )
    table.sizes.update(fresh.sizes)
    return table


def merge_tables(tables: Sequence[SensitivityTable]) -> SensitivityTable:
    """One table holding every (group, ratio) of ``tables``; they must describe the same scan.

    Entries present in several tables must agree (to 1e-6); the base metric is the first table's.
    """
    if not tables:
        raise PruningError("nothing to merge: no sensitivity tables given")
    merged = copy.deepcopy(tables[0])
    for table in tables[1:]:
        differences = merged.mismatches(table)
        if differences:
            raise PruningError(
                f"cannot merge sensitivity tables of different scans: {'; '.join(differences)}"
            )
        if merged.base_metric is None:
            merged.base_metric = table.base_metric
        merged.sizes.update(table.sizes)
        for name, ratios in table.groups.items():
            target = merged.groups.setdefault(name, {})
            for key, entry in ratios.items():
                if key in target and abs(target[key]["metric"] - entry["metric"]) > 1e-6:
                    raise PruningError(
                        f"cannot merge: group {name} at ratio {key} has metric {target[key]['metric']} "
                        f"in one table and {entry['metric']} in another"
                    )
                target.setdefault(key, dict(entry))
    return merged


def table_rows(table: SensitivityTable, limit: int | None = None) -> list[list[str]]:
    """Rows (group, size, loss in % at each ratio) for a text table."""
    ratio_keys = sorted({k for r in table.groups.values() for k in r}, key=float)
    rows = []
    for name, results in islice(table.groups.items(), limit):
        cells = [f"{100 * results[k]['loss']:.1f}" if k in results else "-" for k in ratio_keys]
        rows.append([name, str(table.sizes.get(name, "?")), *cells])
    return rows
