"""What a compression run reports: the model before and after, the epochs run, what strategies did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelStats:
    macs: int
    params: int
    size_bytes: int
    top1: float | None = None
    top5: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class CompressionSummary:
    before: ModelStats
    after: ModelStats
    epochs_run: list[int] = field(default_factory=list)
    resumed_from: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: str | None = None
    top1_per_epoch: dict[int, float] = field(default_factory=dict)  # epochs run in this process and evaluated

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "epochs_run": self.epochs_run,
            "resumed_from": self.resumed_from,
            "events": self.events,
            "last_checkpoint": self.last_checkpoint,
            "top1_per_epoch": self.top1_per_epoch,
        }
