"""The latency-aware verdict (benchmarks/md_latency_verdict.py): a win is 3% more speed, no top-1 lost."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def verdict(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("md_latency_verdict")


def _p2(uniform, aware_b1, aware_b8):
    def timing(uniform_x, b1_x, b8_x):
        return {
            "torchslim r16": {"speedup": uniform_x},
            "torchslim latency-aware b1": {"speedup": b1_x},
            "torchslim latency-aware b8": {"speedup": b8_x},
        }

    return {
        "models": {
            "mobilenet_v2": {
                "summary": {
                    "onnxruntime b1": timing(uniform[0], aware_b1[0], aware_b8[0]),
                    "onnxruntime b8": timing(uniform[1], aware_b1[1], aware_b8[1]),
                }
            }
        }
    }


def _accuracy(uniform_ft, aware_ft):
    return {
        "models": {
            "mobilenet_v2": {
                "methods": {
                    "torchslim-l1+bn+rec": {"top1_after_bn": 37.46, "top1_after_finetune": uniform_ft},
                    "torchslim-latency-aware+bn+rec": {
                        "top1_after_bn": 29.88,
                        "top1_after_finetune": aware_ft,
                    },
                }
            }
        }
    }


def test_each_batch_compares_the_plan_made_for_it(verdict):
    entries = verdict.verdicts(_p2((1.80, 2.00), (1.86, 1.0), (1.0, 2.05)), _accuracy(82.0, 82.0))
    assert [(e["batch"], round(e["gain"], 4), e["wins"]) for e in entries] == [
        ("b1", round(1.86 / 1.80 - 1, 4), True),
        ("b8", 0.025, False),  # 2.5% faster is not enough
    ]
    assert "at: mobilenet_v2 b1; nowhere else" in verdict.verdict_sentence(entries)


def test_a_faster_plan_that_loses_top1_does_not_win(verdict):
    entries = verdict.verdicts(_p2((1.80, 2.00), (1.90, 1.0), (1.0, 2.20)), _accuracy(82.0, 81.9))
    assert not any(e["wins"] for e in entries)
    lines = verdict.latency_verdict_section(
        _p2((1.80, 2.00), (1.90, 1.0), (1.0, 2.20)), _accuracy(82.0, 81.9)
    )
    text = "\n".join(lines)
    assert "| mobilenet_v2 | b8 | 2.00x | 2.20x | +10.0% | 37.46 / 29.88 | 82.00 / 81.90 | no |" in text
    assert "nowhere without losing top-1" in text


def test_without_both_results_the_section_says_what_it_needs(verdict):
    assert verdict.verdicts(None, _accuracy(1, 1)) == []
    assert "needs" in verdict.latency_verdict_section(_p2((1, 1), (1, 1), (1, 1)), None)[2]
