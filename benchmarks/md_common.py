"""Formatting shared by the RESULTS.md section writers (benchmarks/md_*.py)."""

from __future__ import annotations

import numpy as np


def fmt_pct(value, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def fmt_x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def md_table(headers: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(headers) - 1)
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return ["| " + " | ".join(headers) + " |", rule] + [
        "| " + " | ".join(str(c) for c in r) + " |" for r in rows
    ]


def machine_line(payload: dict) -> str:
    m = payload.get("machine", {})
    after = payload.get("machine_after", {}).get("load_average")
    load = f"load average {m.get('load_average')}" + (f" -> {after}" if after else "")
    return (
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('threads')} threads; torch {m.get('torch')}, "
        f"onnxruntime {m.get('onnxruntime')}, torch-pruning {m.get('torch_pruning')}; {m.get('date')}; {load}"
    )


def fmt_top1(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.2f}" + (f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")
