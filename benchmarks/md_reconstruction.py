"""The RESULTS.md section of benchmarks/reconstruction.py: cost at 224 and the P1 accuracy kept."""

from __future__ import annotations

from md_common import md_table


def _machine_line(machine: dict) -> str:
    return (
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('threads')} threads; "
        f"torch {machine.get('torch')}; {machine.get('date')}; load average {machine.get('load_average')}."
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _speed_lines(speed: dict, goals: list) -> list[str]:
    rows = []
    for name, row in speed["models"].items():
        rows.append(
            [
                name,
                f"{row['seconds']:.1f} s",
                f"{row['cpu_seconds']:.0f} s",
                f"{row['images']} of {row['reconstruction_batches'] * row['batch_size']}",
                str(row["layers"]),
                f"{row['error_before']:.3f} -> {row['error_after']:.3f}",
                f"{row['epoch_seconds']:.1f} s",
                f"{row['seconds'] / row['epoch_seconds']:.2f}",
            ]
        )
        goals.append(
            (
                "rec",
                f"{name} reconstruction at {speed['size']}x{speed['size']} with the defaults "
                f"<= {speed['goal_seconds']:.0f} s",
                f"{row['seconds']:.1f} s",
                row["seconds"] <= speed["goal_seconds"],
            )
        )
    headers = [
        "model",
        "reconstruction",
        "CPU time",
        "images used",
        "layers",
        "output error",
        "1,000-image epoch",
        "ratio",
    ]
    return [
        f"### Cost at {speed['size']}x{speed['size']} (random-init ImageNet models, -50% MACs)",
        "",
        _machine_line(speed["machine"]),
        "",
        "Defaults of a `torchslim compress` run (`train.reconstruction_batches` batches of `batch_size`"
        " images; reconstruction keeps as many as its memory and compute budgets allow). The epoch is"
        " one fine-tune epoch of 1,000 images at the same size in the same process;"
        " ratio = reconstruction / epoch.",
        "",
        *md_table(headers, rows),
        "",
    ]


def _p1_lines(p1: dict, goals: list) -> list[str]:
    rows = []
    for name, criteria in p1["models"].items():
        for criterion, row in criteria.items():
            recorded = row.get("recorded_top1_after_rec")
            same_start = row.get("recorded_top1_after_bn") == row["top1_after_bn"]
            change = None if recorded is None else row["top1_after_rec"] - recorded
            rows.append(
                [
                    f"{name} {criterion}",
                    f"{row['top1_after_bn']:.2f}" + ("" if same_start else " (differs)"),
                    "-" if recorded is None else f"{recorded:.2f}",
                    f"{row['top1_after_rec']:.2f}",
                    "-" if change is None else f"{change:+.2f}",
                    _seconds(row.get("recorded_rec_seconds")),
                    f"{row['rec_seconds']:.1f} s",
                ]
            )
            if change is not None and same_start:
                goals.append(
                    (
                        "rec",
                        f"{name} {criterion}: P1 top-1 after reconstruction within {p1['goal_points']} pt"
                        " of the recorded run",
                        f"{row['top1_after_rec']:.2f} vs {recorded:.2f}",
                        change >= -p1["goal_points"],
                    )
                )
    headers = ["model, criterion", "after BN", "recorded after rec", "after rec now", "change (pt)"]
    headers += ["recorded rec time", "rec time now"]
    settings = p1["settings"]
    return [
        "### P1 accuracy kept (Fashion-MNIST 32x32, the P1 baselines and settings)",
        "",
        _machine_line(p1["machine"]),
        "",
        f"Pruned to -{100 * settings['target']:.0f}% MACs (round_to {settings['round_to']}), BN re-estimated,"
        ' then reconstructed; top-1 on the P1 test slice before fine-tuning. "Recorded" is what'
        " `results/accuracy.json` holds for the same method, before the reconstruction changed; the"
        " after-BN column equals the recorded one where the run started from the same model.",
        "",
        *md_table(headers, rows),
        "",
    ]


def reconstruction_section(payload: dict | None, goals: list) -> list[str]:
    """Markdown lines for results/reconstruction.json; its goals are appended to ``goals``."""
    if not payload:
        return []
    lines = ["## Layer reconstruction: cost and accuracy kept", ""]
    if "speed" in payload:
        lines += _speed_lines(payload["speed"], goals)
    if "p1" in payload:
        lines += _p1_lines(payload["p1"], goals)
    return lines
