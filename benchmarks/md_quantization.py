"""RESULTS.md's section for the prune + int8 benchmark (benchmarks/quantization.py): rows, goals."""

from __future__ import annotations

from md_common import md_table

ROWS = ("unpruned fp32", "pruned fp32", "pruned + PTQ", "pruned + QAT", "torch-pruning + PTQ")
GOAL_PTQ_PT, GOAL_QAT_PT, GOAL_SIZE, GOAL_RESNET_B1 = 1.0, 0.3, 0.27, 2.0


def _cells(label: str, entry: dict, fp32: dict) -> list[str]:
    if "error" in entry:
        return [label, "failed: " + entry["error"].replace("|", "/"), "-", "-", "-", "-"]
    return [
        label,
        f"{entry['top1']:.2f}/{entry['top5']:.2f}",
        f"{entry['size_bytes'] / 1e6:.2f} MB ({entry['size_bytes'] / fp32['size_bytes']:.2f}x)",
        f"{entry['speedup_b1']:.2f}x ({entry['ort_ms_b1']:.2f} ms)",
        f"{entry['speedup_b8']:.2f}x ({entry['ort_ms_b8']:.2f} ms)",
        ", ".join(entry.get("fallback_ops", [])) or "-",
    ]


def _goals(name: str, rows: dict, goals: list) -> None:
    fp32 = rows["pruned fp32"]
    ptq, qat = rows["pruned + PTQ"], rows["pruned + QAT"]
    for label, entry, allowed in (("PTQ", ptq, GOAL_PTQ_PT), ("QAT", qat, GOAL_QAT_PT)):
        if "error" in entry:
            goals.append(("Q", f"{name}: {label} top-1 within {allowed} pt of pruned fp32", "failed", False))
            continue
        drop = fp32["top1"] - entry["top1"]
        goals.append(("Q", f"{name}: {label} top-1 within {allowed} pt of pruned fp32", f"{drop:+.2f} pt",
                      drop <= allowed))  # fmt: skip
    ints = [e for e in (ptq, qat) if "error" not in e]
    ratio = max(e["size_bytes"] for e in ints) / fp32["size_bytes"]
    goals.append(("Q", f"{name}: int8 size <= {GOAL_SIZE}x of fp32", f"{ratio:.2f}x", ratio <= GOAL_SIZE))
    slowest = min(ptq[f"speedup_b{b}"] / fp32[f"speedup_b{b}"] for b in (1, 8))
    goals.append(("Q", f"{name}: pruned + int8 never slower than pruned fp32 (batch 1 and 8)",
                  f"{slowest:.2f}x at worst", slowest >= 1.0))  # fmt: skip
    if name == "resnet34":
        best = max(e["speedup_b1"] for e in ints)
        goals.append(("Q", f"resnet34: pruned + int8 >= {GOAL_RESNET_B1}x over unpruned fp32 in ORT, batch 1",
                      f"{best:.2f}x", best >= GOAL_RESNET_B1))  # fmt: skip


def quantization_section(payload: dict | None, goals: list) -> list[str]:
    """Markdown lines of the Q section; its goals are appended to ``goals`` (p, goal, measured, met)."""
    if not payload:
        return ["## Q prune + int8", "", "(not run)", ""]
    settings = payload["settings"]
    m = payload.get("machine", {})
    lines = [
        "## Q prune + int8 (ONNX Runtime)",
        "",
        f"{payload['data']}; -{settings['target']:.0%} MACs (round_to {settings['round_to']}), "
        f"{settings['finetune_epochs']} fine-tune epochs; PTQ: ORT static QDQ, per-channel int8 weights, "
        f"{settings['calibration_images']} calibration images; QAT: {settings['qat_epochs']} more epochs "
        f"(torch.export + torchao PT2E). Top-1/top-5 in ONNX Runtime on the test slice. Latency: ONNX "
        f"Runtime at {settings['latency_size']}x{settings['latency_size']}, {settings['threads']} threads, "
        f"median of {settings['rounds']} interleaved rounds, as speedups over the unpruned fp32 model.",
        "",
        f"{payload.get('cpu_caption', '')}. {m.get('cpu')}, torch {m.get('torch')}, onnxruntime "
        f"{m.get('onnxruntime')}, torch-pruning {m.get('torch_pruning')}; {m.get('date')}; "
        f"load average {m.get('load_average')}; {payload.get('seconds', 0) / 60:.0f} min.",
        "",
    ]
    if payload.get("kept_from_earlier_run"):
        lines += [
            f"Rows of {', '.join(payload['kept_from_earlier_run'])} come from the previous run of the same "
            "settings (`--keep-others`); its machine line is not repeated here.",
            "",
        ]
    headers = [
        "model",
        "top-1/top-5 %",
        "size (vs pruned fp32)",
        "ORT batch 1",
        "ORT batch 8",
        "ops left fp32",
    ]
    for name, rows in payload["models"].items():
        fp32 = rows["pruned fp32"]
        lines += [f"### {name}", ""]
        lines += md_table(headers, [_cells(label, rows[label], fp32) for label in ROWS if label in rows]) + [
            ""
        ]
        _goals(name, rows, goals)
    return lines
