"""RESULTS.md section for issue 20's P2: 2.0x at -50% MACs, median of fresh-process runs, node profiles."""

from __future__ import annotations

import numpy as np
from md_common import fmt_pct, machine_line, md_table

WORST_NODES = 5


def p2_repeats_section(payload: dict | None, goals: list) -> list[str]:
    title = "## P2 at 2.0x: median of fresh-process runs, and where the 2x is lost (ONNX Runtime)"
    if not payload:
        return [title, "", "(not run: `python benchmarks/p2_repeats.py`)", ""]
    settings = payload["settings"]
    lines = [
        title,
        "",
        f"Machine: {machine_line(payload)}; {payload['seconds'] / 60:.0f} min.",
        "",
        f"-50% MACs at {payload['input_size']}x{payload['input_size']}, {settings['threads']} threads. Each "
        f"model's variants are built once in a fresh process and timed {settings['repeats']} times, each "
        "time in a new process (benchmarks/latency.py's interleaved rounds and machine-state probes); a "
        "cell is the median over those runs of each run's speedup, the runs in brackets. Kernels: the same "
        "for the sums of per-node kernel times from ORT's profiler. `*` = MACs target missed by more than "
        "1%.",
        "",
    ]
    rows = []
    for name, entry in payload["models"].items():
        rows += _model_rows(name, entry)
        _add_goal(goals, name, entry, payload["goal"])
    batches = _batches(payload)
    headers = ["model", "variant", "MACs left"] + [f"ORT {b}" for b in batches]
    lines += md_table(headers + [f"kernels {b}" for b in batches], rows, "ll" + "r" * (1 + 2 * len(batches)))
    lines.append("")
    for name, entry in payload["models"].items():
        lines += _profile_lines(name, entry)
    return lines


def _batches(payload: dict) -> list[str]:
    first = next(iter(payload["models"].values()))
    return [setting.split()[1] for setting in first["summary"]]


def _model_rows(name: str, entry: dict) -> list[list[str]]:
    summary, rows = entry["summary"], []
    for label, info in entry["variants"].items():
        if label == "unpruned":
            continue
        cells = [name, label, fmt_pct(info["macs_left"]) + ("" if info["hit"] else " *")]
        cells += [
            f"{t[label]['speedup']:.2f}x ({', '.join(f'{v:.2f}' for v in t[label]['runs'])})"
            for t in summary.values()
        ]
        cells += [f"{t[label]['kernel_speedup']:.2f}x" for t in summary.values()]
        rows.append(cells)
    base = [f"{t['unpruned']['median_ms']:.2f} ms" for t in summary.values()]
    kernels = [f"{t['unpruned']['kernel_ms']:.2f} ms" for t in summary.values()]
    return rows + [[name, "unpruned (median)", "100%"] + base + kernels]


def _add_goal(goals: list, name: str, entry: dict, goal: float) -> None:
    """The issue-20 goal: some torchslim variant on target at >= ``goal`` at every batch size."""
    best = entry["profiled"]  # p2_repeats.fastest_torchslim: the best worst-batch speedup on target
    values = [t[best]["speedup"] for t in entry["summary"].values()]
    goals.append(
        (
            "P2",
            f"{name}: {best} (the best torchslim variant) >= {goal:.1f}x at "
            + " and ".join(s.split()[1] for s in entry["summary"])
            + " (median of fresh-process runs)",
            " / ".join(f"{v:.2f}x" for v in values),
            all(v >= goal for v in values),
        )
    )


def _profile_lines(name: str, entry: dict) -> list[str]:
    """Where the profiled variant loses its 2x: outside the kernels, by op type, and the worst nodes."""
    best = entry["profiled"]
    lines = [f"### {name}: unpruned vs {best}, node by node", ""]
    lines += _budget_table(entry, best)
    lines += _state_lines(entry, best)
    for setting, profile in entry["profile"].items():
        lines += [
            f"{setting}, by op type ({profile['nodes']} nodes; ms over half = pruned ms minus half the "
            "unpruned ms, what stops a 2x):",
            "",
        ]
        op_rows = [
            [op, v["count"], f"{v['base_ms']:.3f}", f"{v['pruned_ms']:.3f}", f"{v['shortfall_ms']:+.3f}"]
            for op, v in profile["ops"].items()
        ]
        lines += md_table(["op", "nodes", "unpruned ms", "pruned ms", "ms over half"], op_rows) + [""]
        lines += [f"{setting}, the {WORST_NODES} nodes furthest from half their time:", ""]
        lines += md_table(
            [
                "node",
                "op",
                "output (unpruned -> pruned)",
                "MACs left",
                "unpruned ms",
                "pruned ms",
                "over half",
            ],
            [_node_row(node) for node in profile["worst_nodes"][:WORST_NODES]],
        )
        lines.append("")
    return lines


def _budget_table(entry: dict, best: str) -> list[str]:
    """Wall time split into kernels and the rest (dispatch, waits), for both models, per batch: each
    from its fastest run (a slow session only adds time)."""
    rows = []
    for setting, timing in entry["summary"].items():
        base, pruned = timing["unpruned"], timing[best]
        base_rest = base["fastest_ms"] - base["fastest_kernel_ms"]
        pruned_rest = pruned["fastest_ms"] - pruned["fastest_kernel_ms"]
        over = pruned["fastest_ms"] - base["fastest_ms"] / 2
        rows.append(
            [
                setting,
                f"{base['fastest_ms']:.2f} / {pruned['fastest_ms']:.2f}",
                f"{base['fastest_kernel_ms']:.2f} / {pruned['fastest_kernel_ms']:.2f}",
                f"{base_rest:.2f} / {pruned_rest:.2f}",
                f"{over:+.2f}",
                f"{pruned['fastest_kernel_ms'] - base['fastest_kernel_ms'] / 2:+.2f}",
                f"{pruned_rest - base_rest / 2:+.2f}",
            ]
        )
    headers = [
        "setting",
        "wall ms (unpruned / pruned)",
        "kernels ms",
        "outside kernels ms",
        "wall ms over half",
        "of it in kernels",
        "outside kernels",
    ]
    return md_table(headers, rows) + [""]


def _node_row(node: dict) -> list[str]:
    channels = (
        f"{node['base_shape'][1]} -> {node['pruned_shape'][1]}"
        if len(node["base_shape"]) > 1 and len(node["pruned_shape"]) > 1
        else "-"
    )
    macs = fmt_pct(node["macs_left"], 0) if node["macs_left"] is not None else "-"
    return [
        f"`{node['name']}`",
        node["op"],
        channels,
        macs,
        f"{node['base_ms']:.3f}",
        f"{node['pruned_ms']:.3f}",
        f"{node['shortfall_ms']:+.3f}",
    ]


def _state_lines(entry: dict, best: str) -> list[str]:
    """Every comparison of every run with the machine's state around it (benchmarks/machine_state.py)."""
    rows, series = [], {"ms": [], "copy": [], "steal": []}
    for number, run in enumerate(entry.get("runs", []), 1):
        for setting, timing in run.items():
            for attempt in timing.get("_attempts_detail", []):
                state = attempt.get("state") or {}
                copy, steal = state.get("copy_gbs"), state.get("steal")
                rows.append(
                    [
                        f"{number}",
                        setting,
                        "/".join(f"{p:.2f}" for p in attempt["probes"]),
                        f"{attempt['unpruned_ms']:.2f}",
                        "/".join(f"{c:.0f}" for c in copy) if copy else "-",
                        "-" if steal is None else f"{100 * steal:.1f}%",
                        f"{attempt['speedup'][best]:.2f}x",
                    ]
                )
                if setting.endswith("b8") and copy and steal is not None:
                    series["ms"].append(attempt["unpruned_ms"])
                    series["copy"].append(min(copy))
                    series["steal"].append(steal)
    if not rows:
        return []
    headers = ["run", "setting", "probes ms", "unpruned ms", "copy GB/s", "steal", f"{best}"]
    lines = ["Every comparison with the machine's state around it:", ""] + md_table(headers, rows) + [""]
    copy_r, steal_r = (_correlation(series["ms"], series[key]) for key in ("copy", "steal"))
    if copy_r is not None or steal_r is not None:
        lines += [
            "At b8, correlation of the unpruned model's median with the slower copy bandwidth: "
            + _fmt_r(copy_r)
            + "; with the steal time: "
            + _fmt_r(steal_r)
            + f" ({len(series['ms'])} comparisons).",
            "",
        ]
    return lines


def _correlation(a: list[float], b: list[float]) -> float | None:
    """Pearson's r, or None when there are fewer than 3 points or one series does not vary."""
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _fmt_r(value: float | None) -> str:
    return "not measurable (no variation)" if value is None else f"r = {value:+.2f}"
