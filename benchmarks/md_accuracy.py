"""RESULTS.md sections on accuracy: P1 (one fine-tune seed) and P1 over fine-tune seeds."""

from __future__ import annotations

import json
from statistics import median

import common
import numpy as np
from md_common import fmt_pct, fmt_top1, machine_line, md_table, mean_sd

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
        f"Machine: {machine_line(payload)}.",
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
                    fmt_pct(m["macs_left"]) + ("" if m["hit"] else " *"),
                    fmt_top1(m["top1_after_prune"]),
                    fmt_top1(m.get("top1_after_bn")),
                    fmt_top1(m.get("top1_after_rec")),
                ]
                + [fmt_top1(per_epoch[i]) if i < len(per_epoch) else "-" for i in range(epochs)]
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
        lines += md_table(headers + ["vs baseline (pt)"], rows) + [""]
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


def seed_runs(main: dict | None) -> dict[str, dict[str, dict[str, list[float]]]]:
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


def p1_seeds_section(main: dict | None, goals: list) -> list[str]:
    runs = seed_runs(main)
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
                + [fmt_top1(by_seed[s][-1] if s in by_seed else None) for s in seeds]
                + [mean_sd(firsts), mean_sd(finals)]
            )
        headers = ["method"] + [f"seed {s}" for s in seeds] + ["mean, epoch 1", "mean, last epoch"]
        lines += [f"{name}:", ""] + md_table(headers, rows, "l" + "r" * (len(seeds) + 2)) + [""]
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
