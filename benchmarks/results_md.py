"""Write benchmarks/RESULTS.md and the README's generated block from benchmarks/results/*.json.

``python benchmarks/results_md.py`` rewrites both; ``--check`` only compares and exits 1 when either
file differs from what the JSON gives (``make bench-check``; tests/test_generated_numbers.py runs the
same comparison). Each RESULTS.md section comes from a writer in a ``benchmarks/md_<topic>.py`` module
returning markdown lines: add a section by adding one writer to :func:`sections`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import common
from common import ROOT, read_result
from md_accuracy import p1_section, p1_seeds_section
from md_common import md_table
from md_cost import p3_section, p4_section
from md_executorch import executorch_section
from md_latency import candidates_section, p2_section, sweep_section
from md_latency_verdict import latency_verdict_section
from md_p1 import p1_like_for_like_section
from md_p2_repeats import p2_repeats_section
from md_prune_coverage import prune_coverage_section
from md_quantization import quantization_section
from md_readme import README, fill_readme, readme_lines
from md_reconstruction import reconstruction_section
from md_session_states import session_states_section
from md_small_vit import small_vit_lines
from md_timm import timm_section
from md_transformer_check import transformer_check_section
from md_vit_round_to import vit_round_to_section

Goal = tuple[str, str, str, bool]  # (goal group, what, measured value, met)


def sections(goals: list[Goal]) -> list[str]:
    """Every section of RESULTS.md after the goals table, in order; writers append their goals."""
    accuracy = read_result("accuracy")
    return (
        p2_section(read_result("latency"), goals)
        + p2_repeats_section(read_result("p2_repeats"), goals)
        + session_states_section(read_result("session_states"))
        + latency_verdict_section(read_result("p2_repeats"), accuracy)
        + candidates_section(read_result("latency_candidates"))
        + sweep_section(read_result("round_to_sweep"))
        + p3_section(read_result("tool_cost"), goals)
        + p4_section(read_result("throughput"), goals)
        + p1_section(accuracy, goals)
        + p1_seeds_section(accuracy, goals)
        + p1_like_for_like_section(goals)
        + reconstruction_section(read_result("reconstruction"), goals)
        + quantization_section(read_result("quantization"), goals)
        + executorch_section(read_result("executorch"))
        + transformer_check_section(read_result("transformer_check"))
        + small_vit_lines(read_result("small_vit"))
        + vit_round_to_section(read_result("vit_round_to"))
        + timm_section(read_result("timm_coverage"))
        + prune_coverage_section(read_result("prune_coverage"))
    )


def render_results_md() -> str:
    """RESULTS.md as the JSON in benchmarks/results gives it."""
    goals: list[Goal] = []
    body = sections(goals)
    header = [
        "# torchslim benchmark results",
        "",
        "Written by `make bench` (`benchmarks/run_all.py`); raw numbers in "
        f"`benchmarks/{common.RESULTS.name}/*.json`. Goals and method: `../shared/docs/benchmarks.md` "
        "(P1-P4). The machine is shared, so times are compared only within one interleaved run, as ratios.",
        "",
        "## Goals",
        "",
    ]
    rows = [[p, what, value, "met" if met else "**missed**"] for p, what, value, met in goals]
    return "\n".join(header + md_table(["#", "goal", "measured", ""], rows, "lllr") + [""] + body) + "\n"


def render_readme(path: Path = README) -> str:
    """The README with its generated block as the JSON gives it."""
    return fill_readme(
        path.read_text(),
        readme_lines(read_result("accuracy"), read_result("quantization"), read_result("p2_repeats")),
    )


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def write_results_md(path: Path | None = None) -> Path:
    path = path or ROOT / "RESULTS.md"
    _write(path, render_results_md())
    return path


def write_readme() -> Path:
    _write(README, render_readme())
    return README


def drifted() -> list[str]:
    """The generated files whose text differs from what the JSON gives."""
    expected = {ROOT / "RESULTS.md": render_results_md(), README: render_readme()}
    return [str(p) for p, text in expected.items() if not p.is_file() or p.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Compare only; exit 1 on drift.")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted()
        for path in stale:
            print(
                f"{path} differs from what benchmarks/results/*.json gives; "
                "run python benchmarks/results_md.py"
            )
        return 1 if stale else 0
    print(write_results_md())
    print(write_readme())
    return 0


if __name__ == "__main__":
    sys.exit(main())
