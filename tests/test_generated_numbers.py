"""README.md and benchmarks/RESULTS.md hold no typed figures: both are what benchmarks/results_md.py writes
from benchmarks/results/*.json, and a changed figure in the JSON shows up as drift."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
DECIMAL_FIGURE = re.compile(r"\b\d+\.\d+ ?(%|x\b|ms\b| s\b| pt\b)")


@pytest.fixture
def generator(monkeypatch):
    """benchmarks/results_md.py, imported as the script imports its neighbours."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("results_md")


def test_readme_and_results_md_are_what_the_json_gives(generator):
    assert generator.drifted() == []
    assert generator.main(["--check"]) == 0


def test_a_changed_figure_in_the_json_is_drift(generator, tmp_path, monkeypatch, capsys):
    common = sys.modules["common"]
    results = tmp_path / "results"
    shutil.copytree(common.RESULTS, results)
    accuracy = json.loads((results / "accuracy.json").read_text())
    accuracy["models"]["mobilenet_v2"]["methods"]["torchslim-l1+bn+rec"]["top1_after_rec"] = 12.34
    (results / "accuracy.json").write_text(json.dumps(accuracy))
    monkeypatch.setattr(common, "RESULTS", results)
    assert "12.3% after reconstruction" in generator.render_readme()
    assert "| 12.34 |" in generator.render_results_md()
    assert len(generator.drifted()) == 2 and generator.main(["--check"]) == 1
    assert "differs from what benchmarks/results/*.json gives" in capsys.readouterr().out


def test_the_readme_quotes_figures_only_inside_its_generated_block(generator):
    readme = sys.modules["md_readme"]
    text = readme.README.read_text()
    outside = text.split(readme.BEGIN)[0] + text.split(readme.END)[1]
    assert DECIMAL_FIGURE.findall(outside) == []
    inside = text.split(readme.BEGIN)[1].split(readme.END)[0]
    assert DECIMAL_FIGURE.search(inside)  # the pattern does see figures


def test_the_readme_block_needs_its_markers(generator):
    readme = sys.modules["md_readme"]
    with pytest.raises(ValueError, match="results:end"):
        readme.fill_readme("no markers here", ["x"])
    text = f"a\n{readme.BEGIN}\nold\n{readme.END}\nb"
    assert readme.fill_readme(text, ["new"]) == f"a\n{readme.BEGIN}\nnew\n{readme.END}\nb"


def _unit(test_top1: list[float], **extra) -> dict:
    return {
        str(seed): {"macs_left": 0.5, "hit": True, "val_top1": value - 1, "test_top1": value, **extra}
        for seed, value in enumerate(test_top1)
    }


def test_p1_like_for_like_states_the_two_standard_error_verdicts(generator, tmp_path, monkeypatch):
    md_p1 = importlib.import_module("md_p1")
    payload = {
        "model": "net",
        "recipe": {
            "target": 0.5,
            "round_to": 1,
            "train_limit": 100,
            "val_images": 10,
            "test_limit": None,
            "finetune_epochs": 2,
            "finetune_lr": 0.01,
            "bn_batches": 2,
            "rec_batches": 2,
        },
        "machine": {},
        "torchslim_default": "l1_norm",
        "baseline": {"epochs": 4, "plateau": True, "val_top1_per_epoch": [80.0, 80.1], "test_top1": 80.0},
        "units": {
            "control": _unit([81.0, 81.2, 81.1]),
            "torchslim:l1_norm+rec": _unit([82.0, 82.2, 82.1], val_after_rec=70.0),
            "torch-pruning:default": _unit([80.0, 80.2, 80.1]),
            "torch-pruning:l1-first": _unit([82.0, 82.3, 81.9]),
        },
    }
    payload["baseline"]["macs"] = 1000
    results = tmp_path / "results"
    results.mkdir()
    (results / "p1_like_for_like-net.json").write_text(json.dumps(payload))
    monkeypatch.setattr(sys.modules["common"], "RESULTS", results)
    goals: list = []
    text = "\n".join(md_p1.p1_like_for_like_section(goals))
    assert "beats Torch-Pruning's default" in text and "(+2.00 pt, standard error 0.08 pt)" in text
    assert "is within 2 standard errors of its equivalent method" in text
    assert "| 82.10 ± 0.10 | +1.00 | 3 |" in text  # test mean ± sd, against the control row's mean
    assert [met for *_, met in goals] == [True, False]
    assert "Chosen on the validation split (never the test set): `l1_norm+rec`" in text
    assert md_p1.verdict([1.0], [0.5], "x").endswith("(one seed: no standard error, no verdict)")


def test_the_readme_shows_the_seed_table_with_its_int8_row_once_quantization_ran(generator):
    int8 = sys.modules["md_readme_int8"]
    assert int8.int8_lines(None) == []

    def entry(top1, size, ms, speedup, **extra):
        return dict(top1=top1, top5=99.0, size_bytes=size, ort_ms_b1=ms, speedup_b1=speedup, **extra)

    rows = {
        "unpruned fp32": entry(83.5, 13_000_000, 6.0, 1.0, macs=12_000_000),
        "pruned fp32": entry(82.9, 6_400_000, 3.2, 1.88, macs=6_000_000),
        "pruned + PTQ": entry(82.4, 1_700_000, 2.9, 2.07),
    }
    payload = {
        "data": "Fashion-MNIST",
        "settings": {"latency_size": 224, "threads": 2},
        "cpu_caption": "CPU: test",
        "models": {"resnet34": rows},
    }
    text = "\n".join(int8.int8_lines(payload))
    assert "| resnet34 | -50% MACs + int8 | 6.0 M | 82.40/99.00 | 1.70 MB | 2.90 ms (2.07x) |" in text
    assert "| resnet34 | baseline | 12.0 M | 83.50/99.00 | 13.00 MB | 6.00 ms (1.00x) |" in text
