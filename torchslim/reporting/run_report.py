"""``torchslim report``: a compression run's results table, events and plots as markdown."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from torchslim.engine import list_checkpoints, load_checkpoint, read_jsonl
from torchslim.errors import CheckpointError
from torchslim.export import export_onnx
from torchslim.export.pte import PTE_FILE
from torchslim.models import build_from_manifest, check_state_dict, load_model
from torchslim.pruning.counting import channel_counts, human
from torchslim.quant import INT8_FILE
from torchslim.quant.executorch_int8 import INT8_PTE_FILE
from torchslim.quant.saved import RECORD_FILE
from torchslim.reporting.plots import plot_channels, plot_history
from torchslim.reporting.results import (
    ResultRow,
    cpu_caption,
    fill_times,
    int8_row,
    results_table,
    row_for,
    speedup_line,
    time_models,
)
from torchslim.reporting.tables import markdown_table


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
    """The eval model's input size, else the checkpoint manifest's, else 224."""
    candidate = epoch_dir / "eval_model" / "manifest.json"
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
    manifest = run.meta.get("manifest") or {}
    if (run.eval_dir / "manifest.json").is_file():
        final, _ = load_model(run.eval_dir, trusted=trusted)
    else:
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
    rows = {"baseline": base_row, "final": final_row}
    int8_path = run.eval_dir / INT8_FILE
    if int8_path.is_file():  # quantized at the end of the run (PTQ or QAT)
        rows["int8"] = int8_row(final_row, int8_path, _int8_record(run.eval_dir))
    if timing:
        times = _time_both(run, base, final, threads=threads, rounds=rounds)
        fill_times(rows, times)
    return list(rows.values())


def _int8_record(directory: Path) -> dict:
    try:
        return json.loads((directory / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _time_both(run: RunData, base: nn.Module, final: nn.Module, *, threads: int, rounds: int) -> dict:
    """PyTorch, ONNX Runtime and (with the extra) ExecuTorch times of both models, and of the int8 model
    where the run wrote one; the final model's own ONNX file and ExecuTorch program where it has them."""
    with tempfile.TemporaryDirectory(prefix="torchslim-report-") as workdir:
        example = torch.randn(1, 3, run.input_size, run.input_size)
        onnx_final = run.eval_dir / "model.onnx"
        if not onnx_final.is_file():
            onnx_final = Path(workdir) / "final.onnx"
            export_onnx(final, example, onnx_final, verify=False)
        onnx_base = Path(workdir) / "base.onnx"
        export_onnx(base, example, onnx_base, verify=False)
        models = {"baseline": (base, onnx_base), "final": (final, onnx_final)}
        if (run.eval_dir / INT8_FILE).is_file():
            models["int8"] = (None, run.eval_dir / INT8_FILE)
        programs = {"final": run.eval_dir / PTE_FILE, "int8": run.eval_dir / INT8_PTE_FILE}
        return time_models(models, run.input_size, threads=threads, rounds=rounds, pte_paths=programs)


def write_run_report(
    run_path: str | Path,
    output: str | Path | None = None,
    *,
    timing: bool = True,
    threads: int = 2,
    rounds: int = 30,
    trusted: str | None = None,
) -> tuple[Path, list[ResultRow]]:
    """``report.md`` for a run: the seed's table (baseline vs final), pruning events, and PNG plots
    beside it."""
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
        f"Run `{run.root}`, checkpoint epoch {run.meta.get('epoch')}, "
        f"input {run.input_size}x{run.input_size}.",
        "",
        results_table(rows, markdown=True),
        "",
        *_executorch_int8_note(run.eval_dir),
    ]
    if timing:
        lines += [
            f"Inference times: batch 1, {threads} threads for every runtime, median of {rounds} interleaved "
            "rounds, a round calling each model as often as it takes to fill its share of half a second "
            f"(baseline architecture with fresh weights; {_phases(rows)}, each timed in a phase of its own).",
            "",
            speedup_line(rows),
            f"{cpu_caption()}.",
            "",
        ]
    lines += _events_section(run.meta.get("events") or []) + _epochs_section(run.records)
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


def _executorch_int8_note(eval_dir: Path) -> list[str]:
    """Where the int8 row's ExecuTorch time comes from: another quantization than its ONNX model's."""
    record = _int8_record(eval_dir).get("executorch")
    written = (eval_dir / INT8_FILE).is_file() and (eval_dir / INT8_PTE_FILE).is_file()
    if not written or not isinstance(record, dict):
        return []
    accuracy = f"; its top-1/top-5 {record['top1']:.2f}/{record['top5']:.2f}" if "top1" in record else ""
    return [
        f"The int8 row's accuracy is its ONNX model's; its ExecuTorch time is `{INT8_PTE_FILE}`'s (XNNPACK's "
        f"quantizer, calibrated on the same images{accuracy}).",
        "",
    ]


def _phases(rows: list[ResultRow]) -> str:
    if rows[0].executorch_ms is None:
        return "ONNX Runtime CPU, then PyTorch eager"
    return "ONNX Runtime CPU, then PyTorch eager, then ExecuTorch with the XNNPACK delegate"


EVENT_HEADERS = [
    "strategy",
    "epoch",
    "MACs before",
    "MACs after",
    "removed",
    "top-1 after prune",
    "after BN",
    "after reconstruction",
]
EPOCH_HEADERS = ["epoch", "train loss", "top-1", "top-5", "val loss", "MACs", "images/s"]


def _events_section(events: list[dict]) -> list[str]:
    """The pruning events as a markdown table (no section without events)."""
    if not events:
        return []
    rows = [
        [
            event.get("strategy", "?"),
            event.get("epoch", "?"),
            human(event.get("macs_before", 0)),
            human(event.get("macs_after", 0)),
            f"{event.get('flops_reduction', 0):.1%}",
        ]
        + [
            _fmt(event.get(key), 2)
            for key in ("top1_after_prune", "top1_after_bn_recalibration", "top1_after_reconstruction")
        ]
        for event in events
    ]
    intro = (
        "Top-1 right after each pruning step, after batch-norm re-estimation, and after reconstruction "
        "(refitting the layers that lost input channels); the per-epoch table below has it after each "
        "fine-tune epoch."
    )
    return ["## Pruning events", "", intro, "", markdown_table(EVENT_HEADERS, rows, "lrrrrrrr"), ""]


def _epochs_section(records: list[dict]) -> list[str]:
    """The per-epoch log as a markdown table (no section without records)."""
    if not records:
        return []
    rows = [
        [
            r.get("epoch"),
            _fmt(r.get("train_loss")),
            _fmt(r.get("top1"), 2),
            _fmt(r.get("top5"), 2),
            _fmt(r.get("val_loss")),
            human(r["macs"]) if r.get("macs") else "-",
            _fmt(r.get("images_per_s"), 0),
        ]
        for r in records
    ]
    return ["## Per epoch", "", markdown_table(EPOCH_HEADERS, rows, "r" * len(EPOCH_HEADERS)), ""]


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
