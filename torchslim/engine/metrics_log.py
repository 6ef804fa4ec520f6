"""Per-epoch metrics as JSON lines, appended so a kill loses at most one line."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line, flushed and fsynced.

    If an earlier writer was killed mid-line, a newline is written first so the
    torn line stays on its own and the new record is readable.
    """
    line = json.dumps(record, sort_keys=True) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines file; [] when it does not exist.

    Lines that do not parse (torn by a kill) are skipped with a warning naming
    the path and line number.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                warnings.warn(f"{path}:{number}: skipping an unreadable (torn) line", stacklevel=2)
    return records
