"""The per-epoch metrics log (JSON lines) survives a line torn by a kill."""

from __future__ import annotations

import pytest

from torchslim.engine import (
    append_jsonl,
    read_jsonl,
)


def test_metrics_jsonl_survives_a_torn_line(tmp_path):
    log = tmp_path / "runs" / "metrics.jsonl"
    append_jsonl(log, {"epoch": 0, "top1": 10.0})
    with open(log, "a") as f:
        f.write('{"epoch": 1, "to')  # a writer killed mid-line
    append_jsonl(log, {"epoch": 1, "top1": 20.0})
    with pytest.warns(UserWarning, match="metrics.jsonl:2"):
        records = read_jsonl(log)
    assert records == [{"epoch": 0, "top1": 10.0}, {"epoch": 1, "top1": 20.0}]
    assert read_jsonl(tmp_path / "none.jsonl") == []
