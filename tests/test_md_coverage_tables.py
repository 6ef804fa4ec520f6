"""The coverage tables: every torchvision model (benchmarks/md_prune_coverage.py), one row each with
its groups cut by kind; the reference transformers (md_transformer_check.py), units kept and the
three differences."""

from __future__ import annotations

import importlib
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_rows_give_the_cut_by_kind_and_the_totals(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    md = importlib.import_module("md_prune_coverage")
    vit = {"model": "vit_b_16", "input_size": 224, "flops_reduction": 0.5019, "groups_pruned": 25}
    vit |= {"cut_by_kind": {"mlp hidden": 12, "heads": 12, "embedding": 1}, "groups_skipped": 1}
    vit |= {"rel_diff": 1.2e-6, "status": "ok", "reason": ""}
    old = {"model": "alexnet", "input_size": 64, "flops_reduction": 0.5, "groups_pruned": 7, "status": "ok"}
    totals = {"models": 2, "ok": 2, "unprunable": 0, "error": 0}
    payload = {"target_flops": 0.5, "seconds": 12.0, "totals": totals, "results": [vit, old]}
    lines = md.prune_coverage_section(payload)
    assert "| vit_b_16 | 224 | -50.2% | 25 | embedding 1, heads 12, mlp hidden 12 | 1 | 1e-06 | ok |" in lines
    assert "| alexnet | 64 | -50.0% | 7 | - | - | - | ok |" in lines
    assert any("2 of 2 ok, 0 unprunable, 0 errors, in 12 s." in line for line in lines)
    assert md.prune_coverage_section(None) == []


def test_transformer_rows_give_units_kept_and_every_difference(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    md = importlib.import_module("md_transformer_check")
    entry = {"model": "timm:deit_small_patch16_224", "macs_before": 4.599e9, "macs_after": 2.298e9}
    entry |= {"reduction": 0.5003, "groups_by_kind": {"heads": 12, "embedding": 1}, "oracle_verified": False}
    entry |= {"units_by_kind": {"heads": [72, 47], "embedding": [384, 272]}, "oracle_max_abs_diff": 0.5}
    entry |= {"reload_max_abs_diff": 0.0, "ort_max_abs_diff": 1.5e-6, "output_abs_max": 2.5}
    lines = md.transformer_check_section(
        {"input_size": 224, "target": 0.5, "round_to": 8, "results": [entry]}
    )
    row = next(line for line in lines if line.startswith("| timm:"))
    header = next(line for line in lines if line.startswith("| model"))
    assert header.count("|") == row.count("|")
    assert "| 4.599 G -> 2.298 G | -50.03% |" in row
    assert "heads 72 -> 47 (12 groups); embedding 384 -> 272 (1 group)" in row
    assert "| 2.50 | 5.0e-01 **failed** | 0.0e+00 | 1.5e-06 |" in row
