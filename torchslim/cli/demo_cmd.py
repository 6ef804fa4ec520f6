"""``demo``: the main job on the embedded default data, end to end (what `make demo` runs)."""

from __future__ import annotations

import argparse

from torchslim.cli.demo import DemoSettings, print_demo_table, run_demo

from .output import emit_json


def add_parsers(subparsers) -> None:
    defaults = DemoSettings()
    parser = subparsers.add_parser(
        "demo",
        help="Train a small baseline on Fashion-MNIST, prune it -50%% MACs, fine-tune, evaluate and deploy.",
        description="The end-to-end demo: a baseline trained on a slice of Fashion-MNIST, pruned by the uniform "
        "strategy to -50%% MACs, fine-tuned, evaluated (PyTorch and ONNX Runtime) and timed, printed as the "
        "seed's results table. Re-running resumes from the checkpoints already in --output.",
    )
    parser.add_argument("--model", default=defaults.model, help=f"Model (default {defaults.model}).")
    parser.add_argument(
        "--output", default=defaults.output, help=f"Run directory (default {defaults.output})."
    )
    parser.add_argument("--train-limit", type=int, default=defaults.train_limit, help="Training images used.")
    parser.add_argument("--val-limit", type=int, default=defaults.val_limit, help="Validation images used.")
    parser.add_argument(
        "--baseline-epochs", type=int, default=defaults.baseline_epochs, help="Baseline epochs."
    )
    parser.add_argument(
        "--finetune-epochs", type=int, default=defaults.finetune_epochs, help="Fine-tune epochs."
    )
    parser.add_argument("--data", default=defaults.data, help="Data spec (default fashion-mnist).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = DemoSettings(
        model=args.model,
        output=args.output,
        train_limit=args.train_limit,
        val_limit=args.val_limit,
        baseline_epochs=args.baseline_epochs,
        finetune_epochs=args.finetune_epochs,
        data=args.data,
    )
    rows = run_demo(settings)
    if args.json:
        emit_json({"rows": [vars(r) for r in rows]})
    else:
        print_demo_table(rows, settings)
    return 0
