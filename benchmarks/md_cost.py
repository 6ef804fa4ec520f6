"""RESULTS.md sections on cost: P3 tool cost (time to prune), P4 fine-tune throughput."""

from __future__ import annotations

from md_common import fmt_pct, fmt_x, machine_line, md_table


def p3_section(payload: dict | None, goals: list) -> list[str]:
    if not payload:
        return ["## P3 tool cost", "", "(not run)", ""]
    lines = [
        "## P3 tool cost: built model -> pruned model at -50% MACs (224x224)",
        "",
        f"Machine: {machine_line(payload)}.",
        "",
    ]
    rows = []
    for name, r in payload["models"].items():
        low = r.get("torchslim_min_seconds")
        rows.append(
            [
                name,
                f"{r['torchslim_seconds']:.2f} s" + ("" if low is None else f" (min {low:.2f} s)"),
                fmt_pct(r["torchslim_macs_left"], 2),
                f"{r['torch_pruning_bisection_seconds']:.2f} s ({r['torch_pruning_tries']} tries)",
                fmt_pct(r["torch_pruning_macs_left"], 2),
                f"{r['torch_pruning_one_step_seconds']:.2f} s",
                fmt_x(r["speedup_vs_bisection"]),
            ]
        )
        if name == "resnet34":
            goals.append(
                (
                    "P3",
                    "resnet34: <= 1 s and faster than Torch-Pruning",
                    f"{r['torchslim_seconds']:.2f} s vs {r['torch_pruning_bisection_seconds']:.2f} s",
                    r["torchslim_seconds"] <= 1.0 and r["speedup_vs_bisection"] > 1.0,
                )
            )
    lines += md_table(
        [
            "model",
            "torchslim median (min)",
            "MACs left",
            "Torch-Pruning bisection",
            "MACs left",
            "TP one step",
            "torchslim faster by",
        ],
        rows,
    ) + [""]
    for name, r in payload["models"].items():
        phases = ", ".join(f"{k} {v:.3f} s" for k, v in r["phases_median_seconds"].items())
        lines += [f"Where torchslim's time goes ({name}, medians): {phases}.", ""]
    return lines


def p4_section(payload: dict | None, goals: list) -> list[str]:
    if not payload:
        return ["## P4 throughput", "", "(not run)", ""]
    s = payload["settings"]
    lines = [
        "## P4 fine-tune throughput: engine vs bare PyTorch loop",
        "",
        f"Machine: {machine_line(payload)}.",
        f"Batch {s['batch_size']}, {s['batches']} batches per run, {s['rounds']} runs each, alternating.",
        "",
    ]
    rows = []
    for name, r in payload["models"].items():
        rows.append(
            [
                name,
                f"{r['engine_images_per_s']:.1f}",
                f"{r['bare_images_per_s']:.1f}",
                f"{r['ratio']:.3f}",
                f"{r['paired_ratio_median']:.3f}",
            ]
        )
        goals.append(
            (
                "P4",
                f"{name}: engine / bare >= 0.95 (median of paired runs)",
                f"{r['paired_ratio_median']:.3f} (ratio of medians {r['ratio']:.3f})",
                r["paired_ratio_median"] >= 0.95,
            )
        )
    return (
        lines + md_table(["model", "engine images/s", "bare images/s", "ratio", "paired ratio"], rows) + [""]
    )
