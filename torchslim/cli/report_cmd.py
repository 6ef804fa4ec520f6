"""``report``: the seed's results table for a compression run, as Markdown, with PNG plots."""

from __future__ import annotations

import argparse

from torchslim.reporting.results import ResultRow
from torchslim.reporting.run_report import write_run_report

from . import flags
from .common import add_command
from .output import emit_json, log


def add_parsers(subparsers) -> None:
    parser = add_command(
        subparsers,
        "report",
        run_report,
        help="Write a run's results table (baseline vs pruned) and plots as Markdown.",
        description="Read a compression run (the checkpoint_path of `torchslim compress`, or one of its "
        "epoch directories) and write the seed's results table - FLOPs (MACs and %% removed), top-1/top-5, "
        "model size, PyTorch and ONNX Runtime inference time (and ExecuTorch's, with the executorch extra) - "
        "for the baseline and the final pruned model, the pruning events, the per-epoch log, and PNG plots "
        "(accuracy and loss per epoch; output channels "
        "per layer before / after) beside the report.",
    )
    parser.add_argument("--run", required=True, help="Checkpoint path of the run (or one <epoch> directory).")
    parser.add_argument(
        "--model",
        default=None,
        help="For a run of your own factory (file.py:factory): name it to trust its code.",
    )
    parser.add_argument(
        "--output",
        type=flags.output_file,
        default=None,
        help="Markdown file to write (default: <run>/report.md).",
    )
    parser.add_argument(
        "--threads", type=flags.thread_count, default=2, help="Threads for the inference timings (default 2)."
    )
    parser.add_argument(
        "--rounds", type=flags.positive_int, default=30, help="Interleaved timing rounds (default 30)."
    )
    parser.add_argument("--no-timing", action="store_true", help="Skip the inference timings.")


def run_report(args: argparse.Namespace) -> int:
    path, rows = write_run_report(
        args.run,
        args.output,
        timing=not args.no_timing,
        threads=args.threads,
        rounds=args.rounds,
        trusted=args.model,
    )
    log(f"wrote {path} (+ {path.with_suffix('').name}_history.png, {path.with_suffix('').name}_channels.png)")
    if args.json:
        emit_json({"report": str(path), "rows": [_row_payload(row, rows[0].macs) for row in rows]})
    else:
        print(path.read_text().split("\n## ", 1)[0].rstrip())
    return 0


def _row_payload(row: ResultRow, base_macs: int) -> dict:
    return {
        "label": row.label,
        "macs": row.macs,
        "flops_removed": 1 - row.macs / base_macs,
        "top1": row.top1,
        "top5": row.top5,
        "size_bytes": row.size_bytes,
        "torch_ms": row.torch_ms,
        "ort_ms": row.ort_ms,
        "torch_speedup": row.torch_speedup,
        "ort_speedup": row.ort_speedup,
        "executorch_ms": row.executorch_ms,
        "executorch_speedup": row.executorch_speedup,
    }
