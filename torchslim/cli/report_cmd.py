"""``report``: the seed's results table for a compression run, as Markdown, with PNG plots."""

from __future__ import annotations

import argparse

from torchslim.errors import ConfigError

from .output import emit_json, log


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="Write a run's results table (baseline vs pruned) and plots as Markdown.",
        description="Read a compression run (the checkpoint_path of `torchslim compress`, or one of its epoch "
        "directories) and write the seed's results table - FLOPs (MACs and %% removed), top-1/top-5, model "
        "size, PyTorch and ONNX Runtime inference time - for the baseline and the final pruned model, the "
        "pruning events, the per-epoch log, and PNG plots (accuracy and loss per epoch; output channels per "
        "layer before / after) beside the report.",
    )
    parser.add_argument("--run", required=True, help="Checkpoint path of the run (or one <epoch> directory).")
    parser.add_argument(
        "--model",
        default=None,
        help="For a run of your own factory (file.py:factory): name it to trust its code.",
    )
    parser.add_argument("--output", default=None, help="Markdown file to write (default: <run>/report.md).")
    parser.add_argument(
        "--threads", type=int, default=2, help="Threads for the inference timings (default 2)."
    )
    parser.add_argument("--rounds", type=int, default=30, help="Interleaved timing rounds (default 30).")
    parser.add_argument("--no-timing", action="store_true", help="Skip the inference timings.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from torchslim.reporting.run_report import write_run_report

    if args.threads < 1 or args.rounds < 1:
        raise ConfigError("--threads and --rounds must be >= 1")
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
        base = rows[0].macs
        emit_json(
            {
                "report": str(path),
                "rows": [
                    {
                        "label": r.label,
                        "macs": r.macs,
                        "flops_removed": 1 - r.macs / base,
                        "top1": r.top1,
                        "top5": r.top5,
                        "size_bytes": r.size_bytes,
                        "torch_ms": r.torch_ms,
                        "ort_ms": r.ort_ms,
                    }
                    for r in rows
                ],
            }
        )
        return 0
    print(path.read_text().split("\n## ", 1)[0].rstrip())
    return 0
