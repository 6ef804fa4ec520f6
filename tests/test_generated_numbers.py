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
