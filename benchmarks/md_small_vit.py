"""The small-ViT section of RESULTS.md: MLP-only vs balanced vs Torch-Pruning head pruning."""

from __future__ import annotations

VARIANTS = ("baseline", "mlp_only", "balanced", "balanced_per_mac", "torch_pruning_heads")
COLUMNS = (
    ("macs", "MACs (M)"),
    ("heads", "heads"),
    ("embedding", "width"),
    ("mlp_hidden", "MLP hidden"),
    ("top1_pruned", "top-1 pruned"),
    ("top1_finetuned", "top-1 fine-tuned"),
    ("ort_speedup_b1", "ORT speedup, batch 1"),
)


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


def small_vit_lines(payload: dict | None) -> list[str]:
    """Mean ± std over seeds of each variant (``benchmarks/small_vit.py``); [] before it has run."""
    if not payload:
        return []
    summary, args = payload["summary"], payload["args"]
    seeds = ", ".join(map(str, args["seeds"]))
    lines = [
        "## Small ViT on Fashion-MNIST: which widths to cut",
        "",
        "timm VisionTransformer (4 blocks, 4 heads, width 64, MLP 256, patch 4, 32x32), "
        f"-{args['target']:.0%} MACs "
        f"(attention's products counted), {args['epochs']} baseline epochs, "
        f"{args['finetune_epochs']} fine-tune epochs for every variant, seeds {seeds}; top-1 in % on "
        f"{args['val_limit']} Fashion-MNIST test images, mean ± std. ORT speedup: ONNX Runtime, batch 1, "
        f"{args['threads']} thread(s), over the unpruned model; each seed's models timed interleaved in a "
        "fresh process (steady rounds only).",
        "",
        "| variant | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for variant in VARIANTS:
        entry = summary.get(variant)
        if entry is None:
            continue
        cells = [
            _cell(
                entry.get("top1") if key == "top1_finetuned" and variant == "baseline" else entry.get(key),
                key,
            )
            for key, _ in COLUMNS
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    errors = {
        s: row["torch_pruning_heads"]["error"]
        for s, row in payload["seeds"].items()
        if "error" in row.get("torch_pruning_heads", {})
    }
    if errors:
        lines += ["", f"Torch-Pruning failed: {next(iter(errors.values()))}"]
    return lines + [""]
