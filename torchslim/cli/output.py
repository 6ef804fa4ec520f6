"""Output conventions of every command: ``--json`` prints exactly one object on stdout, logs go to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from torchslim.reporting.tables import text_table as table

__all__ = ["emit_json", "log", "table"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, indent=None, default=_default))


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
