"""RESULTS.md section of scripts/transformer_check.py: reference transformers pruned, reloaded, exported."""

from __future__ import annotations

from md_common import md_table

KIND_ORDER = ("heads", "embedding", "mlp hidden", "conv channels")


def _kept(entry: dict) -> str:
    """``heads 144 -> 96 (12 groups); ...`` over the kinds that were cut."""
    units, groups = entry["units_by_kind"], entry["groups_by_kind"]

    def counted(kind: str) -> str:
        return f"{groups[kind]} group" + ("" if groups[kind] == 1 else "s")

    return "; ".join(
        f"{kind} {units[kind][0]} -> {units[kind][1]} ({counted(kind)})"
        for kind in KIND_ORDER
        if kind in units
    )


def transformer_check_section(payload: dict | None) -> list[str]:
    """One row per model: MACs before and after, what was cut, and the three differences."""
    if not payload:
        return []
    rows = [
        [
            entry["model"],
            f"{entry['macs_before'] / 1e9:.3f} G -> {entry['macs_after'] / 1e9:.3f} G",
            f"-{entry['reduction']:.2%}",
            _kept(entry),
            f"{entry['output_abs_max']:.2f}",
            f"{entry['oracle_max_abs_diff']:.1e}" + ("" if entry["oracle_verified"] else " **failed**"),
            f"{entry['reload_max_abs_diff']:.1e}",
            f"{entry['ort_max_abs_diff']:.1e}",
        ]
        for entry in payload["results"]
    ]
    headers = [
        "model",
        "MACs",
        "cut",
        "units kept (summed over groups)",
        "largest output",
        "oracle",
        "reload",
        "ORT vs PyTorch",
    ]
    return [
        "## Reference transformers pruned end to end (scripts/transformer_check.py)",
        "",
        f"Random weights, {payload['input_size']} px, -{payload['target']:.0%} MACs (attention's products "
        f"counted), round_to {payload['round_to']}. Largest absolute differences: oracle (masked original vs "
        "pruned), reload (pruned vs rebuilt from manifest + safetensors), ORT (rebuilt model in ONNX Runtime "
        "vs PyTorch), beside the largest output they are measured against. All-zero weights (ViT's head) "
        "get small random values first, so that no difference is zero by construction.",
        "",
        *md_table(headers, rows, "lrrlrrrr"),
        "",
    ]
