"""RESULTS.md section: slow ONNX Runtime sessions by session mode (benchmarks/session_states.py)."""

from __future__ import annotations

from md_common import machine_line, md_table


def session_states_section(payload: dict | None) -> list[str]:
    title = "## Slow sessions: the bimodal timings, session by session (ONNX Runtime)"
    if not payload:
        return [title, "", "(not run: `python benchmarks/session_states.py`)", ""]
    settings = payload["settings"]
    lines = [
        title,
        "",
        f"Machine: {machine_line(payload)}; {payload['seconds'] / 60:.0f} min.",
        "",
        f"{settings['model']} at 224, unpruned and torchslim -50% MACs at round_to 32/16/8/4: five sessions "
        f"per process, {settings['processes']} fresh processes per mode and batch, the modes interleaved. "
        "A cell: how many processes ran that model's session over 1.3x slower than its fastest process "
        "did, and the CPU seconds per wall-clock second of its runs, normal sessions / slow ones "
        "(2.0 = both threads busy). Modes: `timing` is torchslim's TimingSession (workers spin during a "
        "run and stop when it returns); `no-spin`: workers never spin; `default`: ORT's default (they "
        "keep spinning after a run); `alone`: TimingSession, each session timed with no other open.",
        "",
    ]
    summary = payload["summary"]
    labels = list(next(iter(summary.values())))
    rows = []
    for key, models in summary.items():
        cells = [key]
        for label in labels:
            entry = models[label]
            slow_cpu = entry["cpu_per_wall_slow"]
            cpu = f"{entry['cpu_per_wall_normal']:.2f}" + (
                f" / {slow_cpu:.2f}" if slow_cpu is not None else ""
            )
            cells.append(f"{entry['slow']} of {len(entry['medians_ms'])} ({cpu})")
        rows.append(cells)
    lines += md_table(["mode, batch"] + labels, rows) + [""]
    totals = {key: sum(m["slow"] for m in models.values()) for key, models in summary.items()}
    fewest = min(totals, key=totals.get)
    lines += [
        "Slow sessions in all, per mode and batch: "
        + ", ".join(f"{key} {count}" for key, count in totals.items())
        + f"; fewest: {fewest}.",
        "",
    ]
    return lines
