"""``demo``: the main job end to end (what `make demo` runs): train a small baseline on a slice of
Fashion-MNIST, prune it, fine-tune, evaluate and time both, print the seed's results table.

Everything runs through the same Compressor and configs a user would write.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchslim.compress.compressor import CompressionSummary, Compressor
from torchslim.config import parse_config
from torchslim.criteria import DEFAULT_CRITERION
from torchslim.engine import evaluate
from torchslim.export.pte import PTE_FILE, executorch_available
from torchslim.models import load_model
from torchslim.quant import INT8_FILE
from torchslim.quant.executorch_int8 import INT8_PTE_FILE
from torchslim.quant.saved import RECORD_FILE
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

from . import flags
from .common import add_command, data_help, pick
from .output import emit_json, log


@dataclass
class DemoSettings:
    model: str = "mobilenet_v2"
    output: str = "runs/demo"
    train_limit: int = 10000
    val_limit: int = 2000
    baseline_epochs: int = 3
    finetune_epochs: int = 2
    batch_size: int = 64
    target_ratio: float = 0.5
    data: str = "fashion-mnist"


def add_parsers(subparsers) -> None:
    defaults = DemoSettings()
    parser = add_command(
        subparsers,
        "demo",
        run,
        help="Train a small baseline on Fashion-MNIST, prune it -50%% MACs, fine-tune, evaluate and deploy.",
        description="The end-to-end demo: a baseline trained on a slice of Fashion-MNIST, pruned by the "
        "uniform strategy to -50%% MACs, fine-tuned, evaluated (PyTorch and ONNX Runtime) and timed, printed "
        "as the seed's results table. Re-running resumes from the checkpoints already in --output.",
    )
    parser.add_argument("--model", default=defaults.model, help=f"Model (default {defaults.model}).")
    parser.add_argument(
        "--output",
        type=flags.output_dir,
        default=defaults.output,
        help=f"Run directory (default {defaults.output}).",
    )
    for flag, text in (
        ("--train-limit", "Training images used."),
        ("--val-limit", "Validation images used."),
        ("--baseline-epochs", "Baseline epochs."),
        ("--finetune-epochs", "Fine-tune epochs."),
    ):
        default = getattr(defaults, flag[2:].replace("-", "_"))
        parser.add_argument(
            flag, type=flags.positive_int, default=default, help=f"{text} (default {default})"
        )
    parser.add_argument("--data", default=defaults.data, help=data_help(f"; default {defaults.data}."))


def run(args: argparse.Namespace) -> int:
    fields = ("model", "output", "train_limit", "val_limit", "baseline_epochs", "finetune_epochs", "data")
    settings = DemoSettings(**pick(args, *fields))
    rows = run_demo(settings)
    if args.json:
        emit_json({"rows": [vars(r) for r in rows]})
    else:
        print_demo_table(rows, settings)
    return 0


def run_demo(settings: DemoSettings) -> list[ResultRow]:
    log(
        f"torchslim demo: {settings.model} on Fashion-MNIST 32x32, a slice of {settings.train_limit} "
        f"training and {settings.val_limit} validation images (to fit a few CPU minutes); outputs in "
        f"{settings.output}/"
    )
    log(f"[1/3] baseline: {settings.baseline_epochs} epochs of plain training (no strategy)")
    baseline_dir = _train(settings, "baseline", settings.baseline_epochs, {}, None)[0]
    log(
        f"[2/3] prune -{settings.target_ratio:.0%} MACs (uniform, {DEFAULT_CRITERION}, round_to 8), then "
        f"fine-tune {settings.finetune_epochs} epochs"
    )
    strategies = {**_uniform_strategy(settings), "int8_strategy": {"class": "PostTrainingQuantStrategy"}}
    pruned_dir, compressor, summary = _train(
        settings, "pruned", settings.finetune_epochs, strategies, str(baseline_dir)
    )
    runtimes = (
        "PyTorch, ONNX Runtime and ExecuTorch" if executorch_available() else "PyTorch and ONNX Runtime"
    )
    log(f"[3/3] evaluate both eval models and time them in {runtimes} (batch 1, 1 thread)")
    labelled = {"baseline": baseline_dir, f"-{settings.target_ratio:.0%} pruned": pruned_dir}
    rows = _evaluate_and_time(labelled, compressor, settings.model)
    _log_recovery(summary)
    return rows


def _train(
    settings: DemoSettings, name: str, epochs: int, strategies: dict[str, Any], init: str | None
) -> tuple[Path, Compressor, CompressionSummary]:
    """One compression run under ``output/name``: its last eval model's directory, the compressor and
    the run's summary."""
    config = parse_config(_config(settings, name, epochs, strategies, init), source=f"<demo {name}>")
    compressor = Compressor(config, progress=sys.stderr.isatty())
    summary = compressor.run()
    return Path(settings.output) / name / str(epochs - 1) / "eval_model", compressor, summary


def _uniform_strategy(settings: DemoSettings) -> dict[str, Any]:
    return {
        "uniform_pruning_strategy": {
            "class": "UniformPruneStrategy",
            "pruner": "pruner_1",
            "start_epoch": 0,
            "target_ratio": settings.target_ratio,
            "pruned_params": ".*",
        }
    }


def _config(
    settings: DemoSettings, name: str, epochs: int, strategies: dict[str, Any], init: str | None
) -> dict:
    return {
        "version": 1.0,
        "pruners": {
            "pruner_1": {"class": "StructurePruner", "criterions": {"*": DEFAULT_CRITERION}, "round_to": 8}
        },
        "strategies": strategies,
        "compressor": {
            "epoch": epochs,
            "checkpoint_path": str(Path(settings.output) / name),
            "init_model": init,
            "strategies": list(strategies),
        },
        "train": {
            "model": settings.model,
            "data": settings.data,
            "batch_size": settings.batch_size,
            "lr": 0.05 if init is None else 0.01,
            "lr_strategy": "cosine_decay",
            "l2_decay": 4e-5,
            "train_limit": settings.train_limit,
            "val_limit": settings.val_limit,
            "num_workers": 0,
        },
    }


def _evaluate_and_time(labelled: dict[str, Path], compressor: Compressor, model_name: str) -> list[ResultRow]:
    """A results row per eval model: accuracy on the validation slice, PyTorch, ORT and (with the extra)
    ExecuTorch batch-1 times. The demo's own --model is trusted (it may name a factory in a user's file)."""
    rows, models, programs, input_size = [], {}, {}, None
    for label, directory in labelled.items():
        model, manifest = load_model(directory, trusted=model_name)
        input_size = manifest["input_size"]
        result = evaluate(model, compressor.load_data().val_loader)
        rows.append(row_for(label, model, input_size, result.top1, result.top5))
        models[label], programs[label] = (model, directory / "model.onnx"), directory / PTE_FILE
        if (directory / INT8_FILE).is_file():  # the int8 model PostTrainingQuantStrategy wrote
            record = json.loads((directory / RECORD_FILE).read_text())
            rows.append(int8_row(rows[-1], directory / INT8_FILE, record))
            models[rows[-1].label] = (None, directory / INT8_FILE)
            programs[rows[-1].label] = directory / INT8_PTE_FILE
    # batch 1 of a small model: one thread is fair
    timings = time_models(models, input_size, threads=1, pte_paths=programs)
    fill_times({row.label: row for row in rows}, timings)
    return rows


def _log_recovery(summary: CompressionSummary) -> None:
    """Top-1 right after pruning and after each recovery step, before any fine-tuning."""
    for event in summary.events:
        for key, text in (
            ("top1_after_prune", "right after pruning"),
            ("top1_after_bn_recalibration", "after BN re-estimation"),
            ("top1_after_reconstruction", "after reconstruction"),
        ):
            if key in event:
                log(f"top-1 {text}, before fine-tuning: {event[key]:.2f}%")


def print_demo_table(rows: list[ResultRow], settings: DemoSettings) -> None:
    print(
        f"\n{settings.model} on Fashion-MNIST (32x32; {settings.train_limit} train / {settings.val_limit} "
        "val images)"
    )
    print(results_table(rows))
    print(speedup_line(rows))
    print(f"Batch 1, 1 thread. {cpu_caption()}.")
    print(
        f"\nEval models and ONNX inference models are in {settings.output}/baseline and "
        f"{settings.output}/pruned."
    )
