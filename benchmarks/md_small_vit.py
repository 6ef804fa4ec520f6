"""The small-ViT section of RESULTS.md: MLP-only vs balanced vs Torch-Pruning head pruning."""

from __future__ import annotations

VARIANTS = ("baseline", "mlp_only", "balanced", "balanced_per_mac", "torch_pruning_heads")
DESCRIPTIONS = {
    "baseline": "unpruned",
    "mlp_only": "torchslim, MLP hidden widths only",
    "balanced": "torchslim, heads + MLP + embedding, one fraction for every group (the default planner)",
    "balanced_per_mac": "torchslim, heads + MLP + embedding ranked by importance per MAC (`per_mac`)",
    "torch_pruning_heads": "Torch-Pruning 1.6, heads + channels (group L1, round_to 8)",
}
TORCHSLIM = ("mlp_only", "balanced", "balanced_per_mac")
COLUMNS = (
    ("macs", "MACs (M)"),
    ("heads", "heads (all blocks)"),
    ("embedding", "width"),
    ("mlp_hidden", "MLP hidden (all blocks)"),
    ("top1_pruned", "test top-1 pruned"),
    ("top1_finetuned", "test top-1 fine-tuned"),
    ("val_top1_finetuned", "val top-1 fine-tuned"),
    ("ort_speedup_b1", "ORT speedup, batch 1"),
)
# The baseline has no pruned / fine-tuned top-1: its own top-1 goes in the fine-tuned columns.
BASELINE_KEYS = {"top1_finetuned": "top1", "val_top1_finetuned": "val_top1"}


def _cell(values: list[float] | None, key: str) -> str:
    if not values:
        return "-"
    mean, std = values
    if key == "macs":
        return f"{mean / 1e6:.2f}"
    if key in ("heads", "embedding", "mlp_hidden"):
        return f"{mean:.0f}"
    if key == "ort_speedup_b1":
        return f"{mean:.2f}x ± {std:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def chosen_on_validation(summary: dict) -> str | None:
    """The torchslim variant with the best mean validation top-1 after fine-tuning."""
    scored = {
        v: summary[v]["val_top1_finetuned"][0]
        for v in TORCHSLIM
        if "val_top1_finetuned" in summary.get(v, {})
    }
    return max(scored, key=scored.get) if scored else None


def _row(variant: str, entry: dict) -> str:
    keys = [BASELINE_KEYS.get(key, key) if variant == "baseline" else key for key, _ in COLUMNS]
    cells = [_cell(entry.get(key), column) for key, (column, _) in zip(keys, COLUMNS, strict=True)]
    return f"| {variant}: {DESCRIPTIONS[variant]} | " + " | ".join(cells) + " |"


def small_vit_lines(payload: dict | None) -> list[str]:
    """Mean ± std over seeds of each variant (``benchmarks/small_vit.py``); [] before it has run."""
    if not payload:
        return []
    summary, args = payload["summary"], payload["args"]
    seeds = ", ".join(map(str, args["seeds"]))
    tests = "all 10,000" if args.get("test_limit") is None else str(args["test_limit"])
    lines = [
        "## Small ViT on Fashion-MNIST: which widths to cut (benchmarks/small_vit.py)",
        "",
        "timm VisionTransformer (4 blocks, 4 heads of 16, width 64, MLP 256, patch 4, 32x32), "
        f"-{args['target']:.0%} MACs (attention's products counted), {args['epochs']} baseline epochs, "
        f"{args['finetune_epochs']} fine-tune epochs for every variant, seeds {seeds}; mean ± std. "
        f"Test top-1 in % on {tests} Fashion-MNIST test images; validation top-1 on the last "
        f"{args['val_images']} training images, never trained on (the choice below reads only these). "
        f"ORT speedup: ONNX Runtime, batch 1, {args['threads']} thread(s), over the unpruned model; each "
        "seed's models timed interleaved in a fresh process (steady rounds only).",
        "",
        "| variant | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    lines += [_row(variant, summary[variant]) for variant in VARIANTS if variant in summary]
    chosen = chosen_on_validation(summary)
    if chosen is not None:
        lines += [
            "",
            f"Chosen on the validation split (best mean validation top-1 after fine-tuning): {chosen}.",
        ]
    errors = _tp_errors(payload)
    if errors:
        lines += ["", f"Torch-Pruning failed: {errors[0]}"]
    return lines + [""]


def _tp_errors(payload: dict) -> list[str]:
    """Torch-Pruning's failures, one per seed where it failed (a result, not a crash)."""
    return [
        row["torch_pruning_heads"]["error"]
        for row in payload["seeds"].values()
        if "error" in row.get("torch_pruning_heads", {})
    ]
