"""RESULTS.md sections on speed: P2 latency, the round_to sweep, latency-aware candidates."""

from __future__ import annotations

from statistics import median

from md_common import fmt_pct, fmt_x, machine_line, md_table

GOAL_SPEEDUP = 1.85


def p2_section(payload: dict | None, goals: list) -> list[str]:
    if not payload:
        return ["## P2 speed", "", "(not run)", ""]
    lines = [
        "## P2 speed: latency at -50% MACs (speedup over the unpruned model)",
        "",
        f"Machine: {machine_line(payload)}.",
        "",
        "Speedup = median of per-round ratios of interleaved runs. In brackets: the ratio of the "
        "20th-percentile latencies (the less-disturbed end; the machine is shared) and, for ONNX Runtime, "
        "the ratio of summed per-node kernel times from ORT's profiler (scheduler stalls and inter-node "
        "waits left out), taken after all timing. Each model's variants are built in one fresh process and "
        "timed in another (see benchmarks/latency.py: a process that had profiled or timed other models "
        "timed slower). This shared machine has a slow state that comes and goes over seconds to minutes "
        "(the probes row below: the same unpruned model timed before and after each comparison), in which "
        "pruned models lose more than unpruned ones. Each comparison is bracketed by probes (the unpruned "
        "model's batch-1 ORT "
        "latency over 1 s) and every round times the unpruned model: speedups come from comparisons whose "
        "two probes ran within 1.2x of the fastest probe, and from their rounds whose unpruned run was "
        "within 1.12x of its fastest; a comparison without both is timed again after a pause (3 times at "
        "most) and the good attempts are pooled. The last rows give the rounds used of those timed and the "
        "probes. `*` = MACs target missed by more than 1%; "
        "`†` = never in the normal state (all rounds used).",
        "",
    ]
    settings = list(next(iter(payload["models"].values()))["timings"])
    for name, entry in payload["models"].items():
        lines += [f"### {name}", ""]
        rows = []
        for label, info in entry["variants"].items():
            if label == "unpruned":
                continue
            cells = [label, fmt_pct(info["macs_left"]) + ("" if info["hit"] else " *")]
            for setting in settings:
                t = entry["timings"][setting][label]
                kernel = f", {t['kernel_speedup']:.2f}x" if "kernel_speedup" in t else ""
                slow = " †" if entry["timings"][setting].get("_slow_state") else ""
                cells.append(f"{t['speedup']:.2f}x ({t['speedup_q20']:.2f}x{kernel}){slow}")
            rows.append(cells)
        base = entry["timings"]
        rows.append(
            ["unpruned (median ms)", "100%"]
            + [f"{base[s]['unpruned']['median_ms']:.1f} ms" for s in settings]
        )
        if all("_rounds_used" in base[s] for s in settings):
            rows.append(
                ["rounds used / timed", ""]
                + [f"{base[s]['_rounds_used']} / {base[s]['_rounds_timed']}" for s in settings]
            )
            rows.append(
                ["probes (ms)", ""] + ["/".join(f"{v:.1f}" for v in base[s]["_probe_ms"]) for s in settings]
            )
        lines += md_table(["variant", "MACs left"] + settings, rows) + [""]
        ort_settings = [s for s in settings if s.startswith("onnxruntime")]
        if "torchslim r16" in entry["variants"]:
            ort = [entry["timings"][s]["torchslim r16"]["speedup"] for s in ort_settings]
            met = entry["variants"]["torchslim r16"]["hit"] and all(v >= GOAL_SPEEDUP for v in ort)
            goals.append(
                (
                    "P2",
                    f"{name} torchslim r16 (default): ORT "
                    + "/".join(s.split()[1] for s in ort_settings)
                    + f" >= {GOAL_SPEEDUP}x at -50% MACs",
                    " / ".join(f"{v:.2f}x" for v in ort),
                    met,
                )
            )
        aware = [(s, f"torchslim latency-aware {s.split()[1]}") for s in ort_settings]
        if all(label in entry["variants"] for _, label in aware):
            ort = [entry["timings"][s][label]["speedup"] for s, label in aware]
            met = all(entry["variants"][label]["hit"] for _, label in aware) and all(
                v >= GOAL_SPEEDUP for v in ort
            )
            goals.append(
                (
                    "P2",
                    f"{name} torchslim latency-aware (planned for the batch size): ORT "
                    + "/".join(s.split()[1] for s in ort_settings)
                    + f" >= {GOAL_SPEEDUP}x",
                    " / ".join(f"{v:.2f}x" for v in ort),
                    met,
                )
            )
        for label, info in entry["variants"].items():
            plan = info.get("plan")
            calibration = (plan or {}).get("calibration") or {}
            if plan and "measured_speedup" in calibration:  # the search's own estimates are not the result
                lines += [
                    f"{label}: blocks {plan['blocks']}, measured kernel speedup from whole-model profiles "
                    f"{calibration['measured_speedup']:.2f}x (the uniform plan with the same blocks: "
                    f"{calibration['base_ms'] / calibration['uniform_ms']:.2f}x); {plan['table_entries']} "
                    f"latency-table entries, {plan['measured']} measured in this run, planning took "
                    f"{info['seconds']:.0f} s.",
                    "",
                ]
            elif plan:
                lines += [
                    f"{label}: blocks {plan['blocks']}, estimated speedup from the latency table "
                    f"{plan['estimated_speedup']:.2f}x (uniform plan with the same blocks: "
                    f"{plan['estimated_base_ms'] / plan['estimated_uniform_ms']:.2f}x); "
                    f"{plan['table_entries']} table entries, {plan['measured']} measured in this run, "
                    f"planning took {info['seconds']:.0f} s.",
                    "",
                ]
                lines += _calibration_lines(plan.get("calibration"))
    return lines


def _calibration_lines(calibration: dict | None) -> list[str]:
    """What latency-aware planning measured when it profiled whole models (kernel sums, ORT profiler)."""
    if not calibration:
        return []
    if "error" in calibration:
        return [f"Calibration failed ({calibration['error']}); planned from the latency table alone.", ""]
    steps = ", ".join(
        f"{p['plan']} {p['measured_ms']:.2f} ms ({p['estimated_ms']:.2f})" for p in calibration["profiles"]
    )
    return [
        "Profiles, in order (summed kernel ms in the whole model; in brackets the calibrated table's "
        f"estimate before profiling it): {steps}; chose the {calibration['chosen']} plan.",
        "",
    ]


def sweep_section(payload: dict | None) -> list[str]:
    if not payload:
        return []
    lines = [
        "## Choosing the default round_to (torchslim uniform l1, ONNX Runtime)",
        "",
        f"Machine: {machine_line(payload)}.",
        "",
    ]
    settings = [s for s in next(iter(payload["models"].values()))["timings"]]
    rows = []
    for name, entry in payload["models"].items():
        for label, info in entry["variants"].items():
            if label == "unpruned":
                continue
            timings = [entry["timings"][s][label] for s in settings]
            rows.append(
                [name, label, fmt_pct(info["macs_left"])]
                + [f"{t['speedup']:.2f}x ({t['speedup_q20']:.2f}x)" for t in timings]
            )
    return (
        lines
        + md_table(["model", "variant", "MACs left"] + settings, rows, "llr" + "r" * len(settings))
        + [""]
    )


def _worst_run(payload: dict) -> str:
    """The run that timed a plan furthest below that plan's other runs, as " (0.5x for a plan that ran
    at 1.5x-1.6x in the other runs)"; empty with fewer than two runs."""
    worst = None
    for by_batch in payload["models"].values():
        for entry in by_batch.values():
            runs = [run["speedup"] for run in entry["runs"]]
            for index, run in enumerate(runs):
                others = [other for i, other in enumerate(runs) if i != index]
                for label, value in run.items():
                    rest = [other[label] for other in others if label in other]
                    if rest and (worst is None or value / median(rest) < worst[0] / median(worst[1])):
                        worst = (value, rest)
    if worst is None:
        return ""
    low, high = min(worst[1]), max(worst[1])
    span = fmt_x(low) if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}x-{fmt_x(high)}"
    return f" ({fmt_x(worst[0])} for a plan that ran at {span} in the other runs)"


def candidates_section(payload: dict | None) -> list[str]:
    """The plans latency-aware planning profiled, each timed wall-clock (benchmarks/latency_candidates.py)."""
    if not payload:
        return []
    lines = [
        "## Latency-aware candidates on the clock (ONNX Runtime, -50% MACs)",
        "",
        f"Machine: {machine_line(payload)}.",
        "Every plan latency-aware planning profiled (the kept one marked), with its summed kernel time from "
        "ORT's profiler as planning measured it, and its wall-clock speedup over the unpruned model in each "
        "of several interleaved runs (each in a fresh process, steady rounds). A single run can time one "
        "session far slower than the others for its whole length" + _worst_run(payload) + ", so the median "
        "of runs is the number to read.",
        "",
    ]
    for name, by_batch in payload["models"].items():
        for batch, entry in by_batch.items():
            runs = entry["runs"]
            rows = []
            for label, kernel in sorted(entry["kernel_ms"].items(), key=lambda item: item[1]):
                mark = " (kept)" if label == entry["chosen"] else ""
                wall = [run["speedup"][label] for run in runs]
                rows.append(
                    [
                        label + mark,
                        f"{kernel:.3f}",
                        fmt_x(entry["base_kernel_ms"] / kernel),
                        fmt_x(median(wall)),
                    ]
                    + [fmt_x(value) for value in wall]
                )
            headers = ["plan", "kernel ms", "kernel speedup", "wall, median of runs"]
            headers += [f"run {i + 1}" for i in range(len(runs))]
            steady = ", ".join(f"{run['rounds_used']}/{run['rounds']}" for run in runs)
            lines += [
                f"{name}, batch {batch[1:]} (unpruned kernel sum {entry['base_kernel_ms']:.3f} ms; steady "
                f"rounds per run {steady}):",
                "",
            ]
            lines += md_table(headers, rows) + [""]
    return lines
