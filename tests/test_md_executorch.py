"""RESULTS.md's ExecuTorch section (benchmarks/md_executorch.py) from a hand-made results payload."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def md(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("md_executorch")


def _row(macs, et_ms, et_x, ort_ms, ort_x, pte, onnx, fallbacks=None, **extra):
    return {
        "macs": macs,
        "executorch_ms": et_ms,
        "executorch_speedup": et_x,
        "onnxruntime_ms": ort_ms,
        "onnxruntime_speedup": ort_x,
        "pte_bytes": pte,
        "onnx_bytes": onnx,
        "pte_fallback_ops": fallbacks or {},
        "pte_export_seconds": 20.0,
        "onnx_export_seconds": 2.0,
        **extra,
    }


def _payload(pruned_fallbacks=None, executorch_steady=True, tp_hit=True) -> dict:
    int8 = {"top1_agreement_executorch": 0.984, "top1_agreement_onnxruntime": 0.95, "onnx_fallback_ops": []}
    rows = {
        "unpruned fp32": _row(4_000_000_000, 40.0, 1.0, 36.0, 1.0, 85_000_000, 85_100_000),
        "unpruned int8": _row(4_000_000_000, 30.0, 1.33, 30.0, 1.2, 21_000_000, 21_500_000, **int8),
        "pruned fp32": _row(2_000_000_000, 20.5, 1.95, 18.0, 2.0, 40_000_000, 40_100_000, pruned_fallbacks),
        "pruned int8": _row(2_000_000_000, 19.0, 2.1, 17.0, 2.12, 10_000_000, 10_300_000, **int8),
    }
    return {
        "settings": {"size": 224, "target": 0.5, "round_to": 16, "threads": 2, "rounds": 30},
        "data": "Fashion-MNIST baselines",
        "cpu_caption": "CPU: test (2 cores); VNNI yes, AVX-512 no, AMX no",
        "machine": {"cpu": "test", "cores": 2, "threads": 2},
        "executorch": "executorch-1.5.1",
        "seconds": 600,
        "models": {
            "resnet34": {
                "rows": rows,
                "variants": {"torch-pruning": {"hit": tp_hit, "ratio": 0.2375, "macs_left": 0.52}},
                "timing": {
                    "onnxruntime": {"steady": True, "rounds": 30},
                    "executorch": {"steady": executorch_steady, "rounds": 30},
                },
            }
        },
    }


def test_without_results_the_section_says_it_was_not_run(md):
    lines = md.executorch_section(None)
    assert lines[0].startswith("## ExecuTorch")
    assert any(line.startswith("(not run") for line in lines)


def test_the_table_has_both_runtimes_side_by_side_with_sizes_and_int8_agreement(md):
    text = "\n".join(md.executorch_section(_payload()))
    assert "CPU: test (2 cores); VNNI yes, AVX-512 no, AMX no" in text
    assert (
        "| resnet34 | unpruned fp32 | 4000.0 M | 40.00 | 1.00x | 36.00 | 1.00x | 85.00 MB / 85.10 MB | - |"
        in text
    )
    int8 = "| 2000.0 M | 19.00 | 2.10x | 17.00 | 2.12x | 10.00 MB / 10.30 MB | 98% / 95% |"
    assert f"| resnet34 | pruned int8 {int8}" in text
    assert "ops outside the XNNPACK delegate: none, in every row" in text
    assert "rough" not in text and "Torch-Pruning's closest ratio" not in text


def test_fallback_ops_unsteady_phases_and_a_missed_target_are_named(md):
    payload = _payload({"aten.mean.dim": 1, "aten.cumsum.default": 2}, executorch_steady=False, tp_hit=False)
    text = "\n".join(md.executorch_section(payload))
    assert (
        "unpruned fp32: none; unpruned int8: none; pruned fp32: aten.cumsum.default x2, aten.mean.dim x1"
        in text
    )
    assert "the ExecuTorch phase had fewer than half its rounds steady, so all 30 were used" in text
    assert "Torch-Pruning's closest ratio (0.2375) leaves 52.0% of the MACs" in text
