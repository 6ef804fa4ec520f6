"""The demo: train a small baseline on Fashion-MNIST, prune it -50% MACs, fine-tune, evaluate, deploy.

Everything runs through the same Compressor and configs a user would write;
the data is a slice of Fashion-MNIST so that the whole job fits in a few
minutes on two CPU cores (the output says how big the slice was).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchslim.compress.compressor import Compressor
from torchslim.config import parse_config
from torchslim.engine import evaluate
from torchslim.models import load_model
from torchslim.reporting.results import ResultRow, results_table, row_for, time_models


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


def _config(
    settings: DemoSettings, name: str, epochs: int, strategies: dict[str, Any], init: str | None
) -> dict:
    return {
        "version": 1.0,
        "pruners": {"pruner_1": {"class": "StructurePruner", "criterions": {"*": "l1_norm"}, "round_to": 8}},
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


def run_demo(settings: DemoSettings, log=lambda m: print(m, file=sys.stderr, flush=True)) -> list[ResultRow]:
    log(
        f"torchslim demo: {settings.model} on Fashion-MNIST 32x32, a slice of {settings.train_limit} training and "
        f"{settings.val_limit} validation images (to fit a few CPU minutes); outputs in {settings.output}/"
    )
    log(f"[1/3] baseline: {settings.baseline_epochs} epochs of plain training (no strategy)")
    baseline = parse_config(
        _config(settings, "baseline", settings.baseline_epochs, {}, None), source="<demo baseline>"
    )
    Compressor(baseline, progress=sys.stderr.isatty()).run()
    baseline_dir = Path(settings.output) / "baseline" / str(settings.baseline_epochs - 1) / "eval_model"
    strategy = {
        "uniform_pruning_strategy": {
            "class": "UniformPruneStrategy",
            "pruner": "pruner_1",
            "start_epoch": 0,
            "target_ratio": settings.target_ratio,
            "pruned_params": ".*",
        }
    }
    log(
        f"[2/3] prune -{settings.target_ratio:.0%} MACs (uniform, l1_norm, round_to 8), then fine-tune {settings.finetune_epochs} epochs"
    )
    pruned_config = parse_config(
        _config(settings, "pruned", settings.finetune_epochs, strategy, str(baseline_dir)),
        source="<demo pruned>",
    )
    compressor = Compressor(pruned_config, progress=sys.stderr.isatty())
    summary = compressor.run()
    pruned_dir = Path(settings.output) / "pruned" / str(settings.finetune_epochs - 1) / "eval_model"
    log("[3/3] evaluate both eval models and time them in PyTorch and ONNX Runtime (batch 1, 1 thread)")
    rows, models, input_size = [], {}, None
    for label, directory in (
        ("baseline", baseline_dir),
        (f"-{settings.target_ratio:.0%} pruned", pruned_dir),
    ):
        model, manifest = load_model(directory)
        input_size = manifest["input_size"]
        result = evaluate(model, compressor.load_data().val_loader)
        rows.append(row_for(label, model, input_size, result.top1, result.top5))
        models[label] = (model, directory / "model.onnx")
    timings = time_models(
        models, input_size, threads=1
    )  # batch 1 of a 32x32 model: one thread is the fair setting
    for row in rows:
        row.torch_ms, row.ort_ms = timings[row.label]
    for event in summary.events:
        for key, text in (
            ("top1_after_prune", "right after pruning"),
            ("top1_after_bn_recalibration", "after BN re-estimation"),
            ("top1_after_reconstruction", "after reconstruction"),
        ):
            if key in event:
                log(f"top-1 {text}, before fine-tuning: {event[key]:.2f}%")
    return rows


def print_demo_table(rows: list[ResultRow], settings: DemoSettings) -> None:
    print(
        f"\n{settings.model} on Fashion-MNIST (32x32; {settings.train_limit} train / {settings.val_limit} val images)"
    )
    print(results_table(rows))
    print(
        f"\nEval models and ONNX inference models are in {settings.output}/baseline and {settings.output}/pruned."
    )
