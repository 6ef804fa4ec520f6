"""RESULTS.md section of scripts/prune_coverage.py: every torchvision classifier pruned, oracle-checked."""

from __future__ import annotations

from md_common import md_table


def _by_kind(result: dict) -> str:
    """``heads 12, mlp hidden 12, ...`` (the run's ``cut_by_kind``), or - where the run did not record it."""
    cut = result.get("cut_by_kind")
    return ", ".join(f"{kind} {count}" for kind, count in sorted(cut.items())) if cut else "-"


def _row(result: dict) -> list[str]:
    reduction, diff = result.get("flops_reduction"), result.get("rel_diff")
    return [
        result["model"],
        str(result.get("input_size", "-")),
        "-" if reduction is None else f"-{reduction:.1%}",
        str(result.get("groups_pruned", "-")),
        _by_kind(result),
        str(result.get("groups_skipped", "-")),
        "-" if diff is None else f"{diff:.0e}",
        result["status"] + (f": {result['reason']}" if result.get("reason") else ""),
    ]


def prune_coverage_section(payload: dict | None) -> list[str]:
    """Totals, then one row per model: input size, MACs cut, groups cut (by kind), kept, oracle error."""
    if not payload:
        return []
    totals = payload["totals"]
    headers = ["model", "input px", "MACs cut", "groups cut", "by kind", "groups kept", "oracle", "status"]
    return [
        "## Every torchvision classifier pruned (scripts/prune_coverage.py)",
        "",
        f"-{payload['target_flops']:.0%} MACs (attention's products counted), each model at 64 px or its "
        "smallest input where that is larger; the oracle compares every pruned model with the masked "
        f"original (relative difference). {totals['ok']} of {totals['models']} ok, "
        f"{totals['unprunable']} unprunable, {totals['error']} errors, in {payload['seconds']:.0f} s.",
        "",
        *md_table(headers, [_row(result) for result in payload["results"]], "lrrrlrrl"),
        "",
    ]
