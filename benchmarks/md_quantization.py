"""RESULTS.md's section for the prune + int8 benchmark (benchmarks/quantization.py): rows, goals."""

from __future__ import annotations

from md_common import md_table

ROWS = ("unpruned fp32", "pruned fp32", "pruned + PTQ", "pruned + QAT", "torch-pruning + PTQ")
GOAL_PTQ_PT, GOAL_QAT_PT, GOAL_SIZE, GOAL_RESNET_B1 = 1.0, 0.3, 0.27, 2.0
BATCHES = (1, 8)
MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet34")  # issue 17's three: a goal of a model not run is missed


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


def _int8_rows(rows: dict) -> dict[str, dict]:
    return {label: rows[label] for label in ("pruned + PTQ", "pruned + QAT") if label in rows}


def _accuracy_goals(name: str, rows: dict, goals: list) -> None:
    fp32 = rows["pruned fp32"]
    for label, allowed in (("pruned + PTQ", GOAL_PTQ_PT), ("pruned + QAT", GOAL_QAT_PT)):
        what = f"{name}: {label.removeprefix('pruned + ')} top-1 within {allowed} pt of pruned fp32"
        entry = rows.get(label, {"error": "not run"})
        if "error" in entry:
            goals.append(("Q", what, "failed", False))
            continue
        drop = fp32["top1"] - entry["top1"]
        goals.append(("Q", what, f"{-drop:+.2f} pt", drop <= allowed))


def _size_and_speed_goals(name: str, rows: dict, goals: list) -> None:
    """Size and speed of every int8 row that ran (PTQ and QAT); a failed row misses them."""
    fp32 = rows["pruned fp32"]
    ints = _int8_rows(rows)
    ran = [entry for entry in ints.values() if "error" not in entry]
    complete = len(ran) == len(ints) == 2
    if not ran:
        goals.append(("Q", f"{name}: int8 size <= {GOAL_SIZE}x of pruned fp32", "no int8 row", False))
        return
    ratio = max(e["size_bytes"] for e in ran) / fp32["size_bytes"]
    goals.append(("Q", f"{name}: int8 size <= {GOAL_SIZE}x of pruned fp32 (PTQ and QAT)", f"{ratio:.2f}x",
                  complete and ratio <= GOAL_SIZE))  # fmt: skip
    slowest = min(
        e[f"ort_ms_b{b}"] and fp32[f"ort_ms_b{b}"] / e[f"ort_ms_b{b}"] for e in ran for b in BATCHES
    )
    goals.append(("Q", f"{name}: pruned + int8 never slower than pruned fp32 (PTQ and QAT, batch 1 and 8)",
                  f"{slowest:.2f}x at worst", complete and slowest >= 1.0))  # fmt: skip
    if name == "resnet34":
        best = max(e["speedup_b1"] for e in ran)
        goals.append(("Q", f"resnet34: pruned + int8 >= {GOAL_RESNET_B1}x over unpruned fp32 in ORT, batch 1",
                      f"{best:.2f}x", best >= GOAL_RESNET_B1))  # fmt: skip


def _goals(name: str, rows: dict, goals: list) -> None:
    _accuracy_goals(name, rows, goals)
    _size_and_speed_goals(name, rows, goals)


def _ptq_activations(settings: dict, images: int) -> str:
    if "activation_type" not in settings:  # a run from before the option: int8, logits quantized
        return f"int8 activations calibrated (minmax) on {images} training images"
    return (
        f"{settings['activation_type']} activations calibrated ({settings['calibrate_method']}) on {images} "
        "training images, logits float"
    )


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
        f"{_ptq_activations(settings, settings['calibration_images'])}; "
        f"QAT: {settings['qat_epochs']} more epochs "
        f"(torch.export + torchao PT2E). Top-1/top-5 in ONNX Runtime on the test slice. Latency: ONNX "
        f"Runtime at {settings['latency_size']}x{settings['latency_size']}, {settings['threads']} threads, "
        f"median of {settings['rounds']} interleaved rounds, as speedups over the unpruned fp32 model.",
        "",
        f"{payload.get('cpu_caption', '')}. {m.get('cpu')}, torch {m.get('torch')}, onnxruntime "
        f"{m.get('onnxruntime')}, torch-pruning {m.get('torch_pruning')}; {m.get('date')}; "
        f"load average {m.get('load_average')}; {payload.get('seconds', 0) / 60:.0f} min.",
        "",
    ]
    missing = [name for name in MODELS if name not in payload["models"]]
    kept = payload.get("kept_from_earlier_run", [])  # results merged by an older version of the benchmark
    if kept:
        lines += [f"Rows of {', '.join(kept)} come from an earlier run (merged); not one run.", ""]
    if missing or kept:
        found = f"missing {', '.join(missing)}" if missing else f"{', '.join(kept)} merged"
        goals.append(("Q", "all three models from one run", found, False))
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
