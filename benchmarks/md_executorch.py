"""RESULTS.md's section for ExecuTorch beside ONNX Runtime (benchmarks/executorch_bench.py)."""

from __future__ import annotations

from md_common import fmt_pct, fmt_x, machine_line, md_table

ROWS = (
    "unpruned fp32",
    "unpruned int8",
    "pruned fp32",
    "pruned int8",
    "torch-pruning fp32",
    "torch-pruning int8",
)
RUNTIME_NAMES = {"executorch": "ExecuTorch", "onnxruntime": "ONNX Runtime"}
HEADERS = [
    "model",
    "row",
    "MACs",
    "ExecuTorch ms",
    "ExecuTorch speedup",
    "ORT ms",
    "ORT speedup",
    "size .pte / .onnx",
    "int8 top-1 agreement ET / ORT",
]


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def _cells(name: str, label: str, row: dict) -> list[str]:
    agreement = "-"
    if "top1_agreement_executorch" in row:
        ours, theirs = row["top1_agreement_executorch"], row["top1_agreement_onnxruntime"]
        agreement = f"{fmt_pct(ours, 0)} / {fmt_pct(theirs, 0)}"
    return [
        name,
        label,
        f"{row['macs'] / 1e6:.1f} M",
        f"{row['executorch_ms']:.2f}",
        fmt_x(row["executorch_speedup"]),
        f"{row['onnxruntime_ms']:.2f}",
        fmt_x(row["onnxruntime_speedup"]),
        f"{_mb(row['pte_bytes'])} / {_mb(row['onnx_bytes'])}",
        agreement,
    ]


def fallback_text(ops: dict[str, int]) -> str:
    return ", ".join(f"{op} x{count}" for op, count in sorted(ops.items())) or "none"


def _model_notes(name: str, model: dict) -> list[str]:
    """Per model: the ops left outside XNNPACK (and those ORT's int8 graph runs in fp32), export times,
    and any timing phase that was not steady."""
    rows = model["rows"]
    outside = {label: fallback_text(rows[label]["pte_fallback_ops"]) for label in ROWS if label in rows}
    if set(outside.values()) == {"none"}:
        pte = "none, in every row (every op runs in the XNNPACK delegate)"
    else:
        pte = "; ".join(f"{label}: {ops}" for label, ops in outside.items())
    ort_fp32 = sorted({op for row in rows.values() for op in row.get("onnx_fallback_ops", [])})
    seconds = ", ".join(
        f"{label} {rows[label]['pte_export_seconds']:.0f} s / {rows[label]['onnx_export_seconds']:.0f} s"
        for label in ROWS
        if label in rows
    )
    lines = [
        f"- {name}: ops outside the XNNPACK delegate: {pte}. Ops ONNX Runtime's int8 graphs still run in "
        f"fp32: {', '.join(ort_fp32) or 'none'}. Export seconds (.pte / .onnx): {seconds}."
    ]
    tp = model.get("variants", {}).get("torch-pruning", {})
    if tp and not tp.get("hit", True):
        lines.append(
            f"- {name}: Torch-Pruning's closest ratio ({tp['ratio']:.4f}) leaves {fmt_pct(tp['macs_left'])} "
            "of the MACs: its alignment does not reach the target within 1%."
        )
    for runtime, timing in model.get("timing", {}).items():
        if not timing.get("steady", True):
            lines.append(
                f"- {name}: the {RUNTIME_NAMES.get(runtime, runtime)} phase had fewer than half its rounds "
                f"steady, so all {timing['rounds']} were used: its figures are rough."
            )
    return lines


def executorch_section(payload: dict | None) -> list[str]:
    """Markdown lines of the ExecuTorch vs ONNX Runtime section (a line saying it was not run without
    results)."""
    title = "## ExecuTorch (XNNPACK) and ONNX Runtime, pruned and int8"
    if not payload:
        return [
            title,
            "",
            "(not run: `python benchmarks/executorch_bench.py`, with the executorch extra)",
            "",
        ]
    settings = payload["settings"]
    size = settings["size"]
    lines = [
        title,
        "",
        f"{payload['data']}. Pruned: -{settings['target']:.0%} MACs at {size}x{size} (uniform l1_norm, "
        f"round_to {settings['round_to']}), batch norms re-estimated, no fine-tune; Torch-Pruning at the "
        "same MACs and alignment. int8: ExecuTorch's XNNPACKQuantizer (PT2E) and ONNX Runtime's static QDQ "
        "(per-channel), top-1 agreement with fp32 on the calibration images. Every row of a model is timed "
        f"in one run: batch 1 at {size}x{size}, {settings['threads']} threads in both runtimes, one phase "
        f"per runtime with the rows interleaved, median of {settings['rounds']} rounds; speedups over the "
        "unpruned fp32 model of the same runtime.",
        "",
        f"{payload.get('cpu_caption', '')}. {machine_line(payload)}; {payload.get('executorch', '')}; "
        f"{payload.get('seconds', 0) / 60:.0f} min.",
        "",
    ]
    if payload.get("kept_from_earlier_run"):
        lines += [
            f"Rows of {', '.join(payload['kept_from_earlier_run'])} come from the previous run of the same "
            "settings (`--keep-others`).",
            "",
        ]
    rows = [
        _cells(name, label, model["rows"][label])
        for name, model in payload["models"].items()
        for label in ROWS
        if label in model["rows"]
    ]
    lines += md_table(HEADERS, rows, "llrrrrrrr") + [""]
    for name, model in payload["models"].items():
        lines += _model_notes(name, model)
    return lines + [""]
