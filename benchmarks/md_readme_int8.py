"""The README block's seed-style table of prune + int8, from results/quantization.json."""

from __future__ import annotations

from md_common import md_table

SHOWN = (("unpruned fp32", "baseline"), ("pruned fp32", "-50% MACs"), ("pruned + PTQ", "-50% MACs + int8"))


def int8_lines(payload: dict | None) -> list[str]:
    """One table per model: MACs, top-1/top-5, size and ONNX Runtime batch-1 latency of the baseline,
    the pruned model and its int8 (PTQ) version, as the seed's results table lists them."""
    if not payload:
        return []
    settings = payload["settings"]
    size = settings["latency_size"]
    lines = [
        f"Prune + int8 ({payload['data']}; ONNX Runtime, batch 1 at {size}x{size}, {settings['threads']} "
        f"threads; {payload.get('cpu_caption', '')}):",
        "",
    ]
    rows = []
    for name, model in payload["models"].items():
        macs = model["pruned fp32"].get("macs")
        for key, label in SHOWN:
            entry = model.get(key)
            if entry is None:
                continue
            entry_macs = entry.get("macs", macs)
            rows.append(
                [
                    name,
                    label,
                    f"{entry_macs / 1e6:.1f} M" if entry_macs else "-",
                    f"{entry['top1']:.2f}/{entry['top5']:.2f}",
                    f"{entry['size_bytes'] / 1e6:.2f} MB",
                    f"{entry['ort_ms_b1']:.2f} ms ({entry['speedup_b1']:.2f}x)",
                ]
            )
    headers = ["model", "variant", "MACs at 32x32", "top-1/top-5 %", "size", "ORT batch 1"]
    return lines + md_table(headers, rows, "llrrrr") + [""]
