"""Latency-aware pruning, judged (issue 19): does it beat uniform round_to 16 by 3% without losing top-1?

Speed comes from issue 20's P2 run (benchmarks/p2_repeats.py: the same -50% MACs models timed in
3 fresh processes, median speedups over the unpruned model); accuracy from P1 (the same
plans applied to the Fashion-MNIST baselines, after BN re-estimation and after fine-tuning).
A plan wins where its speedup is at least ``MIN_GAIN`` above uniform's at the batch size it was
planned for and its top-1 after fine-tuning is not lower.
"""

from __future__ import annotations

from md_common import md_table

MIN_GAIN = 0.03
UNIFORM = "torchslim r16"
UNIFORM_P1, LATENCY_AWARE_P1 = "torchslim-l1+bn+rec", "torchslim-latency-aware+bn+rec"


def verdicts(p2: dict | None, accuracy: dict | None) -> list[dict]:
    """One entry per (model, batch): both speedups, the gain, both top-1s, and whether it won."""
    if not p2 or not accuracy:
        return []
    entries = []
    for name, entry in p2["models"].items():
        methods = accuracy["models"].get(name, {}).get("methods", {})
        uniform_p1, aware_p1 = methods.get(UNIFORM_P1), methods.get(LATENCY_AWARE_P1)
        for setting, timing in entry["summary"].items():
            batch = setting.split()[1]
            aware = f"torchslim latency-aware {batch}"
            if aware not in timing or UNIFORM not in timing or not uniform_p1 or not aware_p1:
                continue
            gain = timing[aware]["speedup"] / timing[UNIFORM]["speedup"] - 1
            kept = aware_p1["top1_after_finetune"] >= uniform_p1["top1_after_finetune"]
            entries.append(
                {
                    "model": name,
                    "batch": batch,
                    "uniform": timing[UNIFORM]["speedup"],
                    "aware": timing[aware]["speedup"],
                    "gain": gain,
                    "top1_bn": (uniform_p1["top1_after_bn"], aware_p1["top1_after_bn"]),
                    "top1_finetune": (uniform_p1["top1_after_finetune"], aware_p1["top1_after_finetune"]),
                    "wins": gain >= MIN_GAIN and kept,
                }
            )
    return entries


def verdict_sentence(entries: list[dict]) -> str:
    wins = [f"{e['model']} {e['batch']}" for e in entries if e["wins"]]
    if wins:
        return (
            f"Latency-aware pruning beats uniform round_to 16 by at least {MIN_GAIN:.0%} without losing "
            f"top-1 after fine-tuning at: {', '.join(wins)}; nowhere else."
        )
    return (
        f"Latency-aware pruning beats uniform round_to 16 by {MIN_GAIN:.0%} nowhere without losing top-1 "
        "after fine-tuning: uniform round_to 16 is what torchslim recommends."
    )


def latency_verdict_section(p2: dict | None, accuracy: dict | None) -> list[str]:
    title = "## Latency-aware pruning, judged: against uniform round_to 16 at the same MACs"
    entries = verdicts(p2, accuracy)
    if not entries:
        return [title, "", "(needs `benchmarks/p2_repeats.py` and P1 results)", ""]
    rows = [
        [
            e["model"],
            e["batch"],
            f"{e['uniform']:.2f}x",
            f"{e['aware']:.2f}x",
            f"{100 * e['gain']:+.1f}%",
            f"{e['top1_bn'][0]:.2f} / {e['top1_bn'][1]:.2f}",
            f"{e['top1_finetune'][0]:.2f} / {e['top1_finetune'][1]:.2f}",
            "yes" if e["wins"] else "no",
        ]
        for e in entries
    ]
    headers = [
        "model",
        "batch",
        "uniform r16",
        "latency-aware (planned for the batch)",
        "gain",
        "top-1 after BN (uniform / aware)",
        "after fine-tune",
        "wins",
    ]
    return [
        title,
        "",
        "Speedups: the P2 section above (median of fresh-process runs, ONNX Runtime, -50% MACs at 224). "
        f"Top-1: P1 ({UNIFORM_P1} against {LATENCY_AWARE_P1}, Fashion-MNIST, one seed; P1's latency-aware "
        "row is the batch-1 plan, planned by speed alone, and its top-1 stands for both batch sizes). A plan "
        f"wins where it is at least {MIN_GAIN:.0%} faster than uniform and its top-1 after fine-tuning is "
        "not lower.",
        "",
        *md_table(headers, rows),
        "",
        verdict_sentence(entries),
        "",
    ]
