"""RESULTS.md section of benchmarks/vit_round_to.py: a pruned ViT's ONNX Runtime speed per round_to."""

from __future__ import annotations

from md_common import machine_line, md_table


def _widths(entry: dict) -> str:
    mlp = "/".join(str(w) for w in entry["mlp_hidden"])
    return f"{entry['heads']} heads, width {entry['embedding']}, MLP {mlp}"


def _cell(timing: dict) -> str:
    runs = ", ".join(f"{s:.2f}" for s in timing["speedups"])
    return f"{timing['speedup']:.2f}x ({runs})" + ("" if timing["steady"] else " unsteady")


def fastest(payload: dict, batch: str) -> str:
    """The pruned variant with the highest median speedup at ``batch``."""
    pruned = {k: v for k, v in payload["timings"][batch].items() if k != "unpruned"}
    return max(pruned, key=lambda label: pruned[label]["speedup"])


def vit_round_to_section(payload: dict | None) -> list[str]:
    """One row per variant: what it kept, MACs left, the speedup per batch size; [] before a run."""
    if not payload:
        return []
    settings, batches = payload["settings"], list(payload["timings"])
    rows = [
        [label, _widths(entry), f"{entry['macs_left']:.1%}"]
        + [_cell(payload["timings"][batch][label]) for batch in batches]
        for label, entry in payload["variants"].items()
    ]
    verdicts = [f"batch {batch[1:]}: {fastest(payload, batch)}" for batch in batches]
    seconds = payload["seconds"]
    return [
        f"## Pruned ViT on ONNX Runtime: which round_to (benchmarks/vit_round_to.py, {seconds:.0f} s)",
        "",
        f"`{settings['model']}` (random weights), -{settings['target']:.0%} MACs, whole heads pruned "
        "(`head_dim` kept), embedding and MLP widths rounded to `round_to`; ONNX Runtime, "
        f"{settings['threads']} threads, {settings['rounds']} interleaved rounds per process, the median "
        f"speedup over {settings['repeats']} fresh processes (each process's in brackets).",
        "",
        *md_table(["variant", "kept", "MACs left"] + [f"ORT {b}" for b in batches], rows),
        "",
        "Fastest pruned variant: " + "; ".join(verdicts) + ".",
        "",
        machine_line(payload),
        "",
    ]
