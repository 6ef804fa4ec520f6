"""``torchslim report``: a compression run's results table, events and plots as markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from torchslim.pruning.counting import human
from torchslim.reporting.plots import plot_history
from torchslim.reporting.results import ResultRow, results_table, row_for, time_models

# --------------------------------------------------------------------------- per-run report (torchslim report)


@dataclass
class RunData:
    """What a compression run left on disk: its newest epoch checkpoint and the per-epoch log."""

    root: Path
    epoch_dir: Path
    meta: dict
    records: list[dict]
    model_name: str
    base_kwargs: dict
    input_size: int

    @property
    def eval_dir(self) -> Path:
        return self.epoch_dir / "eval_model"


def load_run(path: str | Path) -> RunData:
    """A run from its checkpoint root (the newest epoch is used) or from one ``<root>/<epoch>`` directory."""
    import json

    from torchslim.engine import list_checkpoints, read_jsonl
    from torchslim.errors import CheckpointError

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"run directory {path} does not exist")
    if (path / "meta.json").is_file():
        epoch_dir, root = path, path.parent
    else:
        epochs = [p for p in list_checkpoints(path) if (p / "meta.json").is_file()]
        if not epochs:
            raise CheckpointError(
                f"{path} holds no checkpoint (expected <epoch>/meta.json from torchslim compress)"
            )
        epoch_dir, root = epochs[-1], path
    try:
        meta = json.loads((epoch_dir / "meta.json").read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {epoch_dir / 'meta.json'}: {error}") from None
    metrics = root / "metrics.jsonl"
    records = (
        [r for r in read_jsonl(metrics) if r.get("epoch", -1) <= meta.get("epoch", 1 << 30)]
        if metrics.is_file()
        else []
    )
    manifest = meta.get("manifest") or {}
    input_size = _input_size(epoch_dir, manifest)
    return RunData(
        root,
        epoch_dir,
        meta,
        records,
        meta.get("model") or manifest.get("model", "?"),
        dict(manifest.get("kwargs", {})),
        input_size,
    )


def _input_size(epoch_dir: Path, manifest: dict) -> int:
    import json

    for candidate in (epoch_dir / "eval_model" / "manifest.json",):
        if candidate.is_file():
            try:
                return int(json.loads(candidate.read_text()).get("input_size") or 224)
            except (OSError, ValueError):
                pass
    return int(manifest.get("input_size") or 224)


def run_models(run: RunData, trusted: str | None = None) -> tuple[nn.Module, nn.Module]:
    """(unpruned base architecture with fresh weights, the run's final model).

    A run of a user factory (``file.py:factory``) is only rebuilt when ``trusted``
    names that factory, as everywhere a manifest is loaded.
    """
    from torchslim.models import build_from_manifest, check_state_dict, load_model

    manifest = run.meta.get("manifest") or {}
    if (run.eval_dir / "manifest.json").is_file():
        final, _ = load_model(run.eval_dir, trusted=trusted)
    else:
        from torchslim.engine import load_checkpoint

        tensors, _ = load_checkpoint(run.epoch_dir)
        final = build_from_manifest(manifest, trusted)
        check_state_dict(final, tensors["model"], str(run.epoch_dir))
        final.load_state_dict(tensors["model"])
    base = build_from_manifest({**manifest, "modules": {}}, trusted)
    return base.eval(), final.eval()


def run_rows(
    run: RunData,
    base: nn.Module,
    final: nn.Module,
    *,
    timing: bool = True,
    threads: int = 2,
    rounds: int = 30,
) -> list[ResultRow]:
    """The seed's two rows for a run: the baseline (before compression) and the final model."""
    before = run.meta.get("before", {})
    last = next((r for r in reversed(run.records) if r.get("top1") is not None), run.meta.get("metrics", {}))
    base_row = row_for("baseline", base, run.input_size, before.get("top1"), before.get("top5"))
    if before.get("macs"):
        base_row.macs = int(before["macs"])
    final_row = row_for(
        f"pruned (epoch {run.meta.get('epoch')})", final, run.input_size, last.get("top1"), last.get("top5")
    )
    rows = [base_row, final_row]
    if timing:
        import tempfile

        from torchslim.export import export_onnx

        with tempfile.TemporaryDirectory(prefix="torchslim-report-") as workdir:
            example = torch.randn(1, 3, run.input_size, run.input_size)
            onnx_final = run.eval_dir / "model.onnx"
            if not onnx_final.is_file():
                onnx_final = Path(workdir) / "final.onnx"
                export_onnx(final, example, onnx_final, verify=False)
            onnx_base = Path(workdir) / "base.onnx"
            export_onnx(base, example, onnx_base, verify=False)
            times = time_models(
                {"baseline": (base, onnx_base), "final": (final, onnx_final)},
                run.input_size,
                threads=threads,
                rounds=rounds,
            )
        for row, key in ((base_row, "baseline"), (final_row, "final")):
            row.torch_ms, row.ort_ms = times[key]
    return rows


def write_run_report(
    run_path: str | Path,
    output: str | Path | None = None,
    *,
    timing: bool = True,
    threads: int = 2,
    rounds: int = 30,
    trusted: str | None = None,
) -> tuple[Path, list[ResultRow]]:
    """``report.md`` for a run: the seed's table (baseline vs final), pruning events, and PNG plots beside it."""
    from torchslim.pruning.counting import channel_counts
    from torchslim.reporting.plots import plot_channels

    run = load_run(run_path)
    output = Path(output) if output else run.root / "report.md"
    base, final = run_models(run, trusted)
    rows = run_rows(run, base, final, timing=timing, threads=threads, rounds=rounds)
    stem = output.with_suffix("")
    history_png = plot_history(run.records, f"{stem}_history.png", f"{run.model_name}: {run.root}")
    channels_png = plot_channels(
        channel_counts(base),
        channel_counts(final),
        f"{stem}_channels.png",
        title=f"{run.model_name}: output channels per layer, before / after",
    )
    lines = [
        f"# torchslim run report: {run.model_name}",
        "",
        f"Run `{run.root}`, checkpoint epoch {run.meta.get('epoch')}, input {run.input_size}x{run.input_size}.",
        "",
        results_table(rows, markdown=True),
        "",
    ]
    if timing:
        lines += [
            f"Inference times: batch 1, {threads} threads, median of {rounds} interleaved rounds "
            "(baseline architecture with fresh weights; PyTorch eager and ONNX Runtime CPU).",
            "",
        ]
    events = run.meta.get("events") or []
    if events:
        lines += [
            "## Pruning events",
            "",
            "Top-1 right after each pruning step, after batch-norm re-estimation, and after reconstruction "
            "(refitting the layers that lost input channels); the per-epoch table below has it after each "
            "fine-tune epoch.",
            "",
            "| strategy | epoch | MACs before | MACs after | removed | top-1 after prune | after BN | after reconstruction |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for event in events:
            accuracy = [
                _fmt(event.get(k), 2)
                for k in ("top1_after_prune", "top1_after_bn_recalibration", "top1_after_reconstruction")
            ]
            lines.append(
                f"| {event.get('strategy', '?')} | {event.get('epoch', '?')} | {human(event.get('macs_before', 0))} | "
                f"{human(event.get('macs_after', 0))} | {event.get('flops_reduction', 0):.1%} | "
                + " | ".join(accuracy)
                + " |"
            )
        lines.append("")
    if run.records:
        lines += [
            "## Per epoch",
            "",
            "| epoch | train loss | top-1 | top-5 | val loss | MACs | images/s |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in run.records:
            cells = [
                str(r.get("epoch")),
                _fmt(r.get("train_loss")),
                _fmt(r.get("top1"), 2),
                _fmt(r.get("top5"), 2),
                _fmt(r.get("val_loss")),
            ]
            cells += [human(r["macs"]) if r.get("macs") else "-", _fmt(r.get("images_per_s"), 0)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Plots",
        "",
        f"![accuracy and loss per epoch]({history_png.name})",
        "",
        f"![channels per layer before and after]({channels_png.name})",
        "",
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines))
    return output, rows


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
