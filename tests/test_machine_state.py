"""benchmarks/machine_state.py: steal time read from /proc/stat, and a copy bandwidth that is measured."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def state(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("machine_state")


def test_steal_is_the_share_of_all_jiffies_between_two_readings(state, tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n")
    before = state.cpu_jiffies(stat)
    assert before == (35, 1000)
    stat.write_text("cpu  150 0 60 870 10 0 5 105 0 0\n")
    after = state.cpu_jiffies(stat)
    assert state.steal_fraction(before, after) == pytest.approx(70 / 200)
    assert state.steal_fraction(after, before) is None
    assert state.cpu_jiffies(tmp_path / "missing") is None


def test_the_meter_records_bandwidth_both_sides_and_says_so(state):
    with state.StateMeter() as meter:
        pass
    record = meter.as_dict()
    assert len(record["copy_gbs"]) == 2 and all(gbs > 0.1 for gbs in record["copy_gbs"])
    assert "GB/s" in str(meter)
