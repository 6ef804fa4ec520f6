"""The transformer benchmarks' bookkeeping. benchmarks/small_vit.py: a resumed run keeps its recipe, the
summary is mean and std over seeds, and md_small_vit.py's table shows them; md_vit_round_to.py's table
and its fastest variant."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    small_vit = importlib.import_module("small_vit")
    common = importlib.import_module("common")
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    return small_vit


def _rows():
    return {
        "0": {"baseline": {"top1": 80.0, "macs": 10e6}, "mlp_only": {"top1_finetuned": 70.0, "macs": 5e6}},
        "1": {"baseline": {"top1": 84.0, "macs": 10e6}, "mlp_only": {"top1_finetuned": 74.0, "macs": 5e6}},
    }


def test_a_resumed_run_must_use_the_same_recipe(bench, tmp_path):
    args = bench.parse_args(["--seeds", "0", "1", "--epochs", "2"])
    payload = bench.load_or_start(args)
    assert payload["seeds"] == {}
    payload["seeds"] = _rows()
    (tmp_path / "small_vit.json").write_text(json.dumps(payload))
    assert bench.load_or_start(bench.parse_args(["--seeds", "0", "1", "--epochs", "2", "--threads", "2"]))[
        "seeds"
    ] == json.loads(json.dumps(_rows()))  # timing settings may change
    with pytest.raises(SystemExit, match="other settings"):
        bench.load_or_start(bench.parse_args(["--seeds", "0", "1", "--epochs", "3"]))


def test_timing_only_needs_every_seed_trained(bench):
    with pytest.raises(SystemExit, match=r"seeds \[0, 1\] have not run yet"):
        bench.main(["--seeds", "0", "1", "--timing-only"])


def test_summary_and_table_give_mean_and_std_over_seeds(bench, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    md_small_vit = importlib.import_module("md_small_vit")
    summary = bench.summarize(_rows())
    assert summary["baseline"]["top1"] == [82.0, 2.0]
    assert summary["mlp_only"]["top1_finetuned"] == [72.0, 2.0]
    args = vars(bench.parse_args(["--seeds", "0", "1"]))
    lines = md_small_vit.small_vit_lines({"summary": summary, "args": args, "seeds": _rows()})
    rows = {line.split(":")[0].strip("| "): line for line in lines if line.startswith("| ")}
    assert "| 72.00 ± 2.00 |" in rows["mlp_only"]
    assert "82.00 ± 2.00" in rows["baseline"] and "| 5.00 |" in rows["mlp_only"]
    assert any("on all 10,000 Fashion-MNIST test images" in line for line in lines)


def test_the_choice_reads_validation_top1_only(bench):
    md_small_vit = importlib.import_module("md_small_vit")
    summary = {
        "mlp_only": {"val_top1_finetuned": [80.0, 1.0], "top1_finetuned": [90.0, 1.0]},
        "balanced": {"val_top1_finetuned": [82.0, 1.0], "top1_finetuned": [70.0, 1.0]},
        "torch_pruning_heads": {"val_top1_finetuned": [95.0, 1.0]},  # a peer, never chosen
    }
    assert md_small_vit.chosen_on_validation(summary) == "balanced"
    assert md_small_vit.chosen_on_validation({}) is None


def test_vit_round_to_table_names_the_fastest_variant(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    md_vit_round_to = importlib.import_module("md_vit_round_to")

    def timing(speedups):
        return {"speedup": sorted(speedups)[1], "speedups": speedups, "median_ms": 1.0, "steady": True}

    kept = {"heads": 48, "embedding": 272, "mlp_hidden": [1056], "macs_left": 0.5}
    payload = {
        "settings": {"model": "m", "target": 0.5, "threads": 2, "rounds": 20, "repeats": 3},
        "seconds": 10.0,
        "variants": {"unpruned": kept, "round_to 1": kept, "round_to 16": kept},
        "timings": {
            "b1": {
                "unpruned": timing([1.0, 1.0, 1.0]),
                "round_to 1": timing([1.5, 1.6, 1.4]),
                "round_to 16": timing([1.7, 1.2, 1.8]),
            }
        },
    }
    lines = md_vit_round_to.vit_round_to_section(payload)
    assert "| round_to 16 | 48 heads, width 272, MLP 1056 | 50.0% | 1.70x (1.70, 1.20, 1.80) |" in lines
    assert "Fastest pruned variant: batch 1: round_to 16." in lines
    assert md_vit_round_to.vit_round_to_section(None) == []
