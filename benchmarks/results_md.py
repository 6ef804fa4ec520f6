"""Write benchmarks/RESULTS.md from benchmarks/results/*.json (what run_all.py measured)."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median

import common
import numpy as np
from common import ROOT, read_result
from md_timm import timm_section

GOAL_SPEEDUP = 1.85


def _pct(value, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(headers: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(headers) - 1)
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return ["| " + " | ".join(headers) + " |", rule] + [
        "| " + " | ".join(str(c) for c in r) + " |" for r in rows
    ]


def _machine(payload: dict) -> str:
    m = payload.get("machine", {})
    after = payload.get("machine_after", {}).get("load_average")
    load = f"load average {m.get('load_average')}" + (f" -> {after}" if after else "")
    return (
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('threads')} threads; torch {m.get('torch')}, "
        f"onnxruntime {m.get('onnxruntime')}, torch-pruning {m.get('torch_pruning')}; {m.get('date')}; {load}"
    )


def p2_section(payload: dict | None, goals: list) -> list[str]:
    if not payload:
        return ["## P2 speed", "", "(not run)", ""]
    lines = [
        "## P2 speed: latency at -50% MACs (speedup over the unpruned model)",
        "",
        f"Machine: {_machine(payload)}.",
        "",
        "Speedup = median of per-round ratios of interleaved runs. In brackets: the ratio of the "
        "20th-percentile latencies (the less-disturbed end; the machine is shared) and, for ONNX Runtime, "
        "the ratio of summed per-node kernel times from ORT's profiler (scheduler stalls and inter-node "
        "waits left out), taken after all timing. Each model's variants are built in one fresh process and "
        "timed in another (see benchmarks/latency.py: a process that had profiled or timed other models "
        "timed slower). This shared machine has a slow state that comes and goes over seconds to minutes "
        "(the same unpruned MobileNetV2 at 3.9 ms a run, then 6.45 ms), in which pruned models lose more "
        "than unpruned ones. Each comparison is bracketed by probes (the unpruned model's batch-1 ORT "
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
            cells = [label, _pct(info["macs_left"]) + ("" if info["hit"] else " *")]
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
        lines += _table(["variant", "MACs left"] + settings, rows) + [""]
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
        f"Machine: {_machine(payload)}.",
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
                [name, label, _pct(info["macs_left"])]
                + [f"{t['speedup']:.2f}x ({t['speedup_q20']:.2f}x)" for t in timings]
            )
    return (
        lines + _table(["model", "variant", "MACs left"] + settings, rows, "llr" + "r" * len(settings)) + [""]
    )


def candidates_section(payload: dict | None) -> list[str]:
    """The plans latency-aware planning profiled, each timed wall-clock (benchmarks/latency_candidates.py)."""
    if not payload:
        return []
    lines = [
        "## Latency-aware candidates on the clock (ONNX Runtime, -50% MACs)",
        "",
        f"Machine: {_machine(payload)}.",
        "Every plan latency-aware planning profiled (the kept one marked), with its summed kernel time from "
        "ORT's profiler as planning measured it, and its wall-clock speedup over the unpruned model in each "
        "of several interleaved runs (each in a fresh process, steady rounds). A single run can time one "
        "session far slower than the others for its whole length (0.76x for a plan that ran at 1.85x in the "
        "other runs), so the median of runs is the number to read.",
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
                    [label + mark, f"{kernel:.3f}", _x(entry["base_kernel_ms"] / kernel), _x(median(wall))]
                    + [_x(value) for value in wall]
                )
            headers = ["plan", "kernel ms", "kernel speedup", "wall, median of runs"]
            headers += [f"run {i + 1}" for i in range(len(runs))]
            steady = ", ".join(f"{run['rounds_used']}/{run['rounds']}" for run in runs)
            lines += [
                f"{name}, batch {batch[1:]} (unpruned kernel sum {entry['base_kernel_ms']:.3f} ms; steady "
                f"rounds per run {steady}):",
                "",
            ]
            lines += _table(headers, rows) + [""]
    return lines


def p3_section(payload: dict | None, goals: list) -> list[str]:
    if not payload:
        return ["## P3 tool cost", "", "(not run)", ""]
    lines = [
        "## P3 tool cost: built model -> pruned model at -50% MACs (224x224)",
        "",
        f"Machine: {_machine(payload)}.",
        "",
    ]
    rows = []
    for name, r in payload["models"].items():
        low = r.get("torchslim_min_seconds")
        rows.append(
            [
                name,
                f"{r['torchslim_seconds']:.2f} s" + ("" if low is None else f" (min {low:.2f} s)"),
                _pct(r["torchslim_macs_left"], 2),
                f"{r['torch_pruning_bisection_seconds']:.2f} s ({r['torch_pruning_tries']} tries)",
                _pct(r["torch_pruning_macs_left"], 2),
                f"{r['torch_pruning_one_step_seconds']:.2f} s",
                _x(r["speedup_vs_bisection"]),
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
    lines += _table(
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
        f"Machine: {_machine(payload)}.",
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
    return lines + _table(["model", "engine images/s", "bare images/s", "ratio", "paired ratio"], rows) + [""]


def _top1(value) -> str:
    return "-" if value is None else f"{value:.2f}"


GOAL_P1_PT, GOAL_ISSUE8_TOP1, GOAL_ISSUE8_PT, GOAL_ISSUE8_EPOCHS = 0.5, 70.0, 0.3, 2


def _best(methods: dict, prefix: str) -> tuple[str, dict] | None:
    """The method named ``prefix...`` with the highest top-1 after fine-tuning."""
    found = [(k, m) for k, m in methods.items() if k.startswith(prefix) and "top1_after_finetune" in m]
    return max(found, key=lambda item: item[1]["top1_after_finetune"]) if found else None


def p1_section(payload: dict | None, goals: list) -> list[str]:
    if not payload:
        return ["## P1 accuracy", "", "(not run)", ""]
    s = payload["settings"]
    kd = f"T={s.get('kd_temperature', 4.0):g}, alpha={s.get('kd_alpha', 0.5):g}"
    rec = f", reconstruction on {s['rec_batches']} training batches" if "rec_batches" in s else ""
    lines = [
        "## P1 accuracy: Fashion-MNIST, -50% MACs, same fine-tune budget",
        "",
        f"Machine: {_machine(payload)}.",
        f"Data: {payload['data']}. Baseline: {s['baseline_epochs']} epochs, SGD lr {s['baseline_lr']} "
        f"cosine; fine-tune: {s['finetune_epochs']} epochs, lr {s['finetune_lr']} cosine, seed {s['seed']}, "
        f"the same for every method (+kd: distilled from the unpruned baseline, soft labels {kd}); alignment "
        f"round_to={s['round_to']} for both tools; BN re-estimation on {s['bn_batches']} training "
        f"batches{rec}; {payload.get('seconds', 0) / 60:.0f} min in all. Top-1 in %; `-`: the step is not "
        "part of the method; a `+bn` method's fine-tune is the run without BN re-estimation (fine-tuning "
        "does not read the re-estimated statistics); `torchslim-latency-aware+bn+rec` has the channel counts "
        "of P2's latency-aware batch-1 plan for the model at 224 (this baseline's l1 ranking picks the "
        "channels), chosen on speed alone; `torchslim-latency-scored+bn+rec` plans this baseline at 224 the "
        "same way but keeps, of the profiled plans within 2% of the fastest, the one with the best top-1 "
        "after BN re-estimation on 1000 held-out training images; `*` = MACs target missed by more than 1%.",
        "",
    ]
    for name, r in payload["models"].items():
        base = r["baseline_top1"]
        methods = r["methods"]
        epochs = max((len(m.get("top1_per_epoch", [])) for m in methods.values()), default=0)
        rows = []
        for method, m in methods.items():
            per_epoch = m.get("top1_per_epoch", [])
            rows.append(
                [
                    method,
                    _pct(m["macs_left"]) + ("" if m["hit"] else " *"),
                    _top1(m["top1_after_prune"]),
                    _top1(m.get("top1_after_bn")),
                    _top1(m.get("top1_after_rec")),
                ]
                + [_top1(per_epoch[i]) if i < len(per_epoch) else "-" for i in range(epochs)]
                + [f"{-m['drop_vs_baseline']:+.2f}"]
            )
        headers = ["method", "MACs left", "after prune", "after BN", "after reconstruction"]
        headers += [f"fine-tune epoch {i + 1}" if i == 0 else f"epoch {i + 1}" for i in range(epochs)]
        lines += [
            f"### {name}",
            "",
            f"Unpruned baseline: top-1 {base:.2f}%, {r['macs']:,} MACs at 32x32.",
            "",
        ]
        lines += _table(headers + ["vs baseline (pt)"], rows) + [""]
        lines += _p1_seconds(methods)
        lines += _p1_latency_plans(methods)
        _p1_goals(name, base, methods, goals)
    return lines


def _p1_latency_plans(methods: dict) -> list[str]:
    """One line per latency-aware method: the plan kept, its measured kernel speedup, and the scores if
    any."""
    lines = []
    for method, m in methods.items():
        plan = m.get("latency_plan")
        if not plan or plan.get("measured_speedup") is None:
            continue
        scored = ", ".join(f"{e['plan']} {e['score']:.2f}%" for e in plan.get("scores") or [])
        how = (
            f"by held-out top-1 after BN re-estimation ({scored})"
            if plan.get("chosen_by") == "score"
            else "by speed"
        )
        lines.append(
            f"{method}: kept the {plan['chosen']} plan {how}; measured kernel speedup at 224, batch 1: "
            f"{plan['measured_speedup']:.2f}x."
        )
    return lines + [""] if lines else []


def _p1_seconds(methods: dict) -> list[str]:
    """One line: the seconds of each step, each step of a tool once (methods share their tool's first
    steps)."""
    steps, seen = [], set()
    for method, m in methods.items():
        tool = "Torch-Pruning" if method.startswith("torch-pruning") else "torchslim"
        for key, label in (
            ("prune_seconds", "prune"),
            ("bn_seconds", "BN re-estimation"),
            ("rec_seconds", "reconstruction"),
        ):
            if m.get(key) is None or (tool, key) in seen:
                continue
            seen.add((tool, key))
            text = f"{tool} {label} {m[key]:.2f} s" + (
                f" ({m['tries']} tries)" if key == "prune_seconds" and m.get("tries") else ""
            )
            if key == "rec_seconds":
                errors = m.get("rec_layer_errors") or {}
                before = median([b for b, _ in errors.values()]) if errors else m["rec_error_before"]
                after = median([a for _, a in errors.values()]) if errors else m["rec_error_after"]
                kind = "median" if errors else "mean"
                text += (
                    f" ({m['rec_refitted']} of {m['rec_layers']} layers refitted on {m['rec_batches']} "
                    f"batches, {kind} relative output error {before:.3f} -> {after:.3f})"
                )
            steps.append(text)
    tunes = [
        f"{k} {m['finetune_seconds'] / len(m['top1_per_epoch']):.0f} s"
        for k, m in methods.items()
        if m.get("finetune_seconds") is not None and m.get("top1_per_epoch")
    ]
    if tunes:
        steps.append("fine-tune per epoch (evaluation included): " + ", ".join(tunes))
    return ["Seconds: " + "; ".join(steps) + ".", ""] if steps else []


def _p1_goals(name: str, base: float, methods: dict, goals: list) -> None:
    ts, peer = _best(methods, "torchslim"), _best(methods, "torch-pruning")
    if ts and peer:
        (ts_name, m), (peer_name, p) = ts, peer
        goals.append(
            (
                "P1",
                f"{name} best torchslim: >= best Torch-Pruning and within {GOAL_P1_PT} pt of baseline",
                f"{ts_name} {m['top1_after_finetune']:.2f} vs {peer_name} {p['top1_after_finetune']:.2f}, "
                f"baseline {base:.2f}",
                m["top1_after_finetune"] >= p["top1_after_finetune"]
                and base - m["top1_after_finetune"] <= GOAL_P1_PT,
            )
        )
    repaired = {
        f"after {label}": m[key]
        for label, key, m in [
            ("BN", "top1_after_bn", methods.get("torchslim-l1+bn")),
            ("reconstruction", "top1_after_rec", methods.get("torchslim-l1+bn+rec")),
        ]
        if m is not None and m.get(key) is not None
    }
    if repaired:
        goals.append(
            (
                "issue 8",
                f"{name} torchslim right after pruning (no fine-tune) >= {GOAL_ISSUE8_TOP1:.0f}%",
                ", ".join(f"{k} {v:.2f}" for k, v in repaired.items()),
                max(repaired.values()) >= GOAL_ISSUE8_TOP1,
            )
        )
    tuned = [
        (k, m["top1_per_epoch"])
        for k, m in methods.items()
        if k.startswith("torchslim") and m.get("top1_per_epoch")
    ]
    if tuned:
        n = min(GOAL_ISSUE8_EPOCHS, max(len(t) for _, t in tuned))
        best, top1 = max(((k, t[n - 1]) for k, t in tuned if len(t) >= n), key=lambda item: item[1])
        goals.append(
            (
                "issue 8",
                f"{name} torchslim after {n} fine-tune epoch{'s' * (n > 1)}: within "
                f"{GOAL_ISSUE8_PT} pt of baseline",
                f"{best} {top1:.2f}, baseline {base:.2f}",
                base - top1 <= GOAL_ISSUE8_PT,
            )
        )


def _seed_runs(main: dict | None) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Model -> method -> fine-tune seed -> top-1 per epoch: seed 0 from the main P1 run, others from
    accuracy_seeds-*.json."""
    runs: dict[str, dict[str, dict[str, list[float]]]] = {}
    for path in sorted(common.RESULTS.glob("accuracy_seeds-*.json")):
        for name, methods in json.loads(path.read_text())["models"].items():
            for method, by_seed in methods.items():
                runs.setdefault(name, {}).setdefault(method, {}).update(by_seed)
    for name, methods in runs.items():
        for method, by_seed in methods.items():
            entry = ((main or {}).get("models", {}).get(name, {}).get("methods", {})).get(method)
            if entry and entry.get("top1_per_epoch"):
                by_seed.setdefault("0", entry["top1_per_epoch"])
    return runs


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.2f}" + (f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")


def p1_seeds_section(main: dict | None, goals: list) -> list[str]:
    runs = _seed_runs(main)
    if not runs:
        return []
    lines = [
        "### P1 over fine-tune seeds",
        "",
        "The same pruned starts as above, fine-tuned again with other seeds (training order and "
        "augmentation; recipe and test slice unchanged; `benchmarks/accuracy_seeds.py`). Seed 0 is the run "
        "above. Top-1 in %: after the last fine-tune epoch per seed, then the mean ± sd over seeds after the "
        "first and after the last epoch.",
        "",
    ]
    for name, methods in runs.items():
        seeds = sorted({s for by_seed in methods.values() for s in by_seed}, key=int)
        rows, means = [], {}
        for method, by_seed in methods.items():
            finals = [by_seed[s][-1] for s in seeds if s in by_seed]
            firsts = [by_seed[s][0] for s in seeds if s in by_seed]
            means[method] = float(np.mean(finals))
            rows.append(
                [method]
                + [_top1(by_seed[s][-1] if s in by_seed else None) for s in seeds]
                + [_mean_sd(firsts), _mean_sd(finals)]
            )
        headers = ["method"] + [f"seed {s}" for s in seeds] + ["mean, epoch 1", "mean, last epoch"]
        lines += [f"{name}:", ""] + _table(headers, rows, "l" + "r" * (len(seeds) + 2)) + [""]
        ours = max((m for m in means if m.startswith("torchslim")), key=means.get, default=None)
        peer = max((m for m in means if m.startswith("torch-pruning")), key=means.get, default=None)
        base = ((main or {}).get("models", {}).get(name, {})).get("baseline_top1")
        if ours and peer and base is not None:
            goals.append(
                (
                    "P1",
                    f"{name} best torchslim, mean over fine-tune seeds {', '.join(seeds)}: >= best "
                    f"Torch-Pruning and within {GOAL_P1_PT} pt of baseline",
                    f"{ours} {means[ours]:.2f} vs {peer} {means[peer]:.2f}, baseline {base:.2f}",
                    means[ours] >= means[peer] and base - means[ours] <= GOAL_P1_PT,
                )
            )
    return lines


def write_results_md(path: Path | None = None) -> Path:
    path = path or ROOT / "RESULTS.md"
    goals: list[tuple[str, str, str, bool]] = []
    sections = (
        p2_section(read_result("latency"), goals)
        + candidates_section(read_result("latency_candidates"))
        + sweep_section(read_result("round_to_sweep"))
        + p3_section(read_result("tool_cost"), goals)
        + p4_section(read_result("throughput"), goals)
        + p1_section(read_result("accuracy"), goals)
        + p1_seeds_section(read_result("accuracy"), goals)
        + timm_section(read_result("timm_coverage"))
    )
    header = [
        "# torchslim benchmark results",
        "",
        "Written by `make bench` (`benchmarks/run_all.py`); raw numbers in "
        f"`benchmarks/{common.RESULTS.name}/*.json`. Goals and method: `../shared/docs/benchmarks.md` "
        "(P1-P4). The machine is shared, so times are compared only within one interleaved run, as ratios.",
        "",
        "## Goals",
        "",
    ]
    rows = [[p, what, value, "met" if met else "**missed**"] for p, what, value, met in goals]
    text = "\n".join(header + _table(["#", "goal", "measured", ""], rows, "lllr") + [""] + sections)
    path.write_text(text + "\n")
    return path


if __name__ == "__main__":
    print(write_results_md())
