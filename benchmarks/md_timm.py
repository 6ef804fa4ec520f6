"""The RESULTS.md section of benchmarks/timm_coverage.py: outcome counts for both tools, refusal reasons
grouped, and every model's outcome."""

from __future__ import annotations

import re
from collections import Counter

from md_common import md_table

TOOLS = (("torchslim", "torchslim"), ("torch_pruning", "Torch-Pruning"))
OUTCOMES = (
    ("pruned", "pruned, target hit", lambda r: r["outcome"] == "pruned" and r.get("hit")),
    ("missed", "pruned, target missed", lambda r: r["outcome"] == "pruned" and not r.get("hit")),
    ("refused", "refused (one-line reason)", lambda r: r["outcome"] == "refused"),
    ("wrong", "wrong model (oracle / output shape)", lambda r: r["outcome"] == "wrong"),
    ("error", "error (exception)", lambda r: r["outcome"] == "error"),
    ("crashed", "crashed (process died)", lambda r: r["outcome"] == "crashed"),
    ("hung", "hung (time limit)", lambda r: r["outcome"] == "hung"),
)
_NUMBERS = re.compile(r"\b\d+(\.\d+)?%?")


def outcome_of(record: dict | None) -> str:
    if not record:
        return "-"
    return next((key for key, _, test in OUTCOMES if test(record)), record["outcome"])


def reason_key(record: dict) -> str:
    """What to group a refusal or error by: its largest blocker, or its message, without numbers."""
    blockers = record.get("blockers") or []
    text = blockers[0].split(":  ")[0] if blockers else str(record.get("reason", ""))
    text = re.sub(r": \d+ groups, [\d.]+% of MACs$", "", text)
    return _NUMBERS.sub("N", text)[:160]


def timm_section(payload: dict | None) -> list[str]:
    if not payload:
        return ["## timm coverage", "", "(not run: `nice -n 15 python benchmarks/timm_coverage.py`)", ""]
    rows = payload["models"]
    settings = payload["settings"]
    machine = payload.get("machine", {})
    lines = [
        f"## timm coverage: torchslim and Torch-Pruning at -{settings['target']:.0%} MACs",
        "",
        f"{len(rows)} timm {payload['timm']} models (the smallest of each of {payload['modules']} "
        "architecture "
        f"modules asked for), random init, 64 px input unless the config fixes it; round_to "
        f"{settings['round_to']} for both tools, {settings['timeout']} s per model and tool, each in its own "
        f"process. torchslim's pruned models are checked by its oracle; Torch-Pruning's count as pruned when "
        f"it ran and kept the output shape (unverified). Run {machine.get('date')} on a shared machine "
        f"({machine.get('cores')} cores, timings noisy): torchslim "
        f"{payload['tool_seconds'].get('torchslim', 0) / 60:.0f} min, Torch-Pruning "
        f"{payload['tool_seconds'].get('torch_pruning', 0) / 60:.0f} min (all models, processes included).",
        "",
    ]
    counts = {tool: Counter(outcome_of(r.get(tool)) for r in rows) for tool, _ in TOOLS}
    table_rows = [[label] + [counts[tool][key] for tool, _ in TOOLS] for key, label, _ in OUTCOMES]
    lines += md_table(["outcome", *(label for _, label in TOOLS)], table_rows, "lrr") + [""]
    lines += _grouped_reasons(rows)
    lines += _per_model(rows)
    return lines


def _grouped_reasons(rows: list[dict]) -> list[str]:
    lines = []
    for tool, label in TOOLS:
        failed = [r[tool] for r in rows if outcome_of(r.get(tool)) not in ("pruned", "missed", "-")]
        if not failed:
            continue
        groups = Counter(reason_key(r) for r in failed)
        lines += [f"{label}: why models were not pruned (grouped; N stands for numbers)", ""]
        lines += md_table(
            ["reason", "models"], [[k.replace("|", "/"), n] for k, n in groups.most_common()], "lr"
        )
        lines.append("")
    return lines


def _per_model(rows: list[dict]) -> list[str]:
    def cell(record: dict | None) -> str:
        outcome = outcome_of(record)
        if outcome in ("pruned", "missed"):
            return f"{outcome} -{record['macs_removed']:.1%}"
        return outcome

    body = [
        [r["name"], r["module"], (r.get("torchslim") or {}).get("input_size", "-")]
        + [cell(r.get(tool)) for tool, _ in TOOLS]
        for r in rows
    ]
    return (
        ["Every model:", ""]
        + md_table(["model", "module", "input", *(label for _, label in TOOLS)], body, "llrll")
        + [""]
    )
