"""Uniform vs sensitivity-based vs searched (simulated annealing) pruning at -50% MACs on Fashion-MNIST.

Baseline: MobileNetV1 (width 0.5) at 32x32, trained on the first ``--train-limit``
training images (cached under ``benchmarks/cache/``). Every method prunes the
seed's pointwise convs (``pruned_params: '.*_sep_weights'``) with the same
criterion (``l1_norm``) and ``round_to`` 8, through the real strategies
(UniformPruneStrategy, SensitivePruneStrategy, AutoPruneStrategy + SAController).
``sensitive`` chooses ratios from the sensitivity table by least predicted loss
per MAC (torchslim's default); ``sensitive-level`` from the same table by the
seed's rule (one allowed-loss level for every layer). ``auto`` searches
``--sa-iterations`` candidates removing 50-51% of MACs.

Data split, so that no reported number is measured on images that chose the plan:
the sensitivity scan and the search see test images [0, search) ("search slice");
every top-1 below is on test images [search, 10000) (held out).

Columns: top-1 right after pruning (no BN re-estimation), after batch-norm
re-estimation on 20 training batches of 64, the same ones every time (the run's ``after_prune``, as the
compressor does by default; the sensitivity scan re-estimates after every
removal and the search for every candidate, so both measure what they will
get), and after ``--finetune-epochs`` epochs of fine-tuning (SGD 0.01, cosine)
on the training slice. "Before fine-tuning" means the BN column: without
re-estimation every method collapses to about chance at -50% MACs.

    python benchmarks/smart_pruning.py                   # writes benchmarks/results/smart_pruning.json
"""

from __future__ import annotations

import argparse
import copy
import time
from itertools import islice
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from common import CACHE, RESULTS, log, machine_info, train_epochs, write_result
from torch.utils.data import DataLoader, Subset

from torchslim.compress.strategies import CompressionContext, build_strategy
from torchslim.config import parse_config
from torchslim.data import build_datasets
from torchslim.engine import evaluate
from torchslim.models import build_model, load_model, save_model, seed_param_names
from torchslim.pruning.counting import channel_counts, profile_model
from torchslim.recovery.batch_norm import recalibrate_batch_norm
from torchslim.reporting.plots import plot_channels, plot_sensitivities
from torchslim.sensitivity.table import SensitivityTable

MODEL, WIDTH, SIZE = "mobilenet_v1", 0.5, 32
PRUNED_PARAMS = ".*_sep_weights"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3, help="baseline training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--search", type=int, default=1000, help="test images used by the scan / search")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--criterion", default="l1_norm")
    parser.add_argument("--sa-iterations", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=["uniform", "sensitive", "sensitive-level", "auto"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default="smart_pruning")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded machine)"
    )
    return parser.parse_args()


def loaders(args: argparse.Namespace) -> SimpleNamespace:
    train, test, _, _ = build_datasets("fashion-mnist", image_size=SIZE, train_limit=args.train_limit)
    generator = torch.Generator().manual_seed(0)
    return SimpleNamespace(
        train_loader=DataLoader(train, batch_size=128, shuffle=True, drop_last=True, generator=generator),
        # the same 20 shuffled batches for every re-estimation: methods and candidates differ only in their
        # channels
        bn_batches=list(
            islice(
                DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(1)), 20
            )
        ),
        search_loader=DataLoader(Subset(test, range(args.search)), batch_size=500),
        val_loader=DataLoader(Subset(test, range(args.search, len(test))), batch_size=500),
    )


def baseline(args: argparse.Namespace, data: SimpleNamespace) -> tuple[torch.nn.Module, dict[str, Any]]:
    directory = CACHE / f"fmnist-{MODEL}-w{WIDTH}-{args.train_limit}-e{args.epochs}"
    if (directory / "manifest.json").is_file():
        model, manifest = load_model(directory)
        log(f"baseline loaded from {directory}")
        return model, manifest["baseline"]
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=10, width_mult=WIDTH)
    started = time.perf_counter()
    history = train_epochs(model, data, epochs=args.epochs, lr=0.1, seed=0, weight_decay=4e-5)
    record = {
        "epochs": args.epochs,
        "train_images": args.train_limit,
        "seconds": time.perf_counter() - started,
        "history": history,
    }
    save_model(
        directory,
        model,
        MODEL,
        {"num_classes": 10, "width_mult": WIDTH},
        input_size=SIZE,
        extra={"baseline": record},
    )
    log(f"baseline trained in {record['seconds']:.0f} s, cached in {directory}")
    return model.eval(), record


def strategy_config(method: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    common = {
        "pruner": "pruner_1",
        "start_epoch": 0,
        "pruned_params": PRUNED_PARAMS,
        "metric_name": "acc_top1",
    }
    strategies = {
        "uniform": {"class": "UniformPruneStrategy", "target_ratio": args.target},
        "sensitive": {
            "class": "SensitivePruneStrategy",
            "target_ratio": args.target,
            "delta_rate": 0.1,
            "sensitivities_file": str(work / "sensitivities.json"),
        },
        "sensitive-level": {  # the same table, the seed's allocation rule (one allowed-loss level)
            "class": "SensitivePruneStrategy",
            "target_ratio": args.target,
            "delta_rate": 0.1,
            "sensitivities_file": str(work / "sensitivities.json"),
            "allocation": "level",
        },
        "auto": {
            "class": "AutoPruneStrategy",
            "controller": "sa_controller",
            "min_ratio": args.target,  # at least the target: never fewer MACs removed than asked
            "max_ratio": args.target + 0.01,
        },
    }
    return {
        "version": 1.0,
        "pruners": {
            "pruner_1": {"class": "StructurePruner", "criterions": {"*": args.criterion}, "round_to": 8}
        },
        "controllers": {
            "sa_controller": {
                "class": "SAController",
                "reduce_rate": 0.9,
                "init_temperature": 1.0,
                "max_iter_number": args.sa_iterations,
            }
        },
        "strategies": {method: {**common, **strategies[method]}},
        "compressor": {"epoch": 1, "checkpoint_path": None, "strategies": [method]},
        "train": {"data": "fashion-mnist", "seed": 0},
    }


def run_method(method: str, base: torch.nn.Module, data: SimpleNamespace, args: argparse.Namespace) -> dict:
    # one sensitivity table per baseline, criterion and search slice (a stale one would be refused)
    work = (
        CACHE
        / "smart_pruning"
        / f"w{WIDTH}-{args.train_limit}-e{args.epochs}-{args.criterion}-s{args.search}"
    )
    config = parse_config(strategy_config(method, args, work), source=f"<smart_pruning {method}>")
    strategy = build_strategy(method, config.strategies[method], config)
    device = torch.device(args.device)
    model = copy.deepcopy(base).to(device)
    context = CompressionContext(
        model=model,
        base_name=MODEL,
        base_kwargs={"num_classes": 10, "width_mult": WIDTH},
        example_input=torch.zeros(1, 3, SIZE, SIZE, device=device),
        aliases=seed_param_names(MODEL, model),
        device=device,
        train_loader=data.train_loader,
        val_loader=data.search_loader,
    )
    context.evaluate = lambda m=None: evaluate(
        m if m is not None else context.model, data.val_loader, device=device
    )
    context.after_prune = lambda m: recalibrate_batch_norm(m, data.bn_batches, num_batches=20, device=device)
    started = time.perf_counter()
    strategy.on_epoch_begin(context)
    seconds = time.perf_counter() - started
    event = context.events[-1]
    pruned = context.model
    channels_png = RESULTS / f"{args.output}_{method}_channels.png"
    plot_channels(
        channel_counts(base), channel_counts(pruned), channels_png, title=f"{method}: channels per layer"
    )
    history = train_epochs(
        pruned,
        SimpleNamespace(train_loader=data.train_loader, val_loader=data.val_loader),
        epochs=args.finetune_epochs,
        lr=0.01,
        seed=0,
        weight_decay=4e-5,
    )
    macs = profile_model(pruned, SIZE).macs
    row = {
        "method": method,
        "criterion": args.criterion,
        "macs_after": macs,
        "macs_reduction": 1.0 - macs / profile_model(base, SIZE).macs,
        "top1_after_prune": event.get("top1_after_prune"),
        "top1_after_bn_recalibration": event.get("top1_after_bn_recalibration"),
        "top1_after_finetune": history[-1]["top1"] if history else None,
        "finetune_epochs": args.finetune_epochs,
        "strategy_seconds": seconds,
        "ratios": event.get("ratios"),
        "channels_plot": str(channels_png.relative_to(RESULTS.parent)),
    }
    if method == "auto":
        row["search"] = event["search"]
    if method.startswith("sensitive"):
        row["allocation"] = event.get("allocation")
        table = SensitivityTable.load(work / "sensitivities.json")
        curves = RESULTS / f"{args.output}_sensitivities.png"
        plot_sensitivities(table, curves)
        row["sensitivity_plot"] = str(curves.relative_to(RESULTS.parent))
        row["predicted_loss"] = event.get("predicted_loss")
    return row


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = loaders(args)
    base, record = baseline(args, data)
    base_top1 = evaluate(base, data.val_loader).top1
    log(f"baseline top-1 on held-out test images: {base_top1:.2f}%")
    rows = []
    for method in args.methods:
        log(f"--- {method}")
        row = run_method(method, base, data, args)
        log(
            f"{method}: MACs -{row['macs_reduction']:.2%}, top-1 {row['top1_after_prune']:.2f} / "
            f"{row['top1_after_bn_recalibration']:.2f} (BN) / {row['top1_after_finetune']:.2f} (fine-tuned), "
            f"{row['strategy_seconds']:.0f} s"
        )
        rows.append(row)
    payload = {
        "benchmark": "smart_pruning",
        "description": __doc__.split("\n\n")[0],
        "model": f"{MODEL} width {WIDTH} at {SIZE}x{SIZE}",
        "baseline": {"top1": base_top1, **{k: v for k, v in record.items() if k != "history"}},
        "split": {"search_images": f"test[0:{args.search}]", "report_images": f"test[{args.search}:10000]"},
        "settings": vars(args),
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "machine": machine_info(torch.get_num_threads()),
    }
    path = write_result(args.output, payload)
    log(f"\nwrote {path}")
    print(
        "\n| method | MACs reduction | top-1 after prune | + BN re-estimation "
        f"| after {args.finetune_epochs} ep fine-tune |"
    )
    print("|---|---|---|---|---|")
    print(f"| baseline | 0% | {base_top1:.2f} | - | - |")
    for row in rows:
        print(
            f"| {row['method']} ({row['criterion']}) | {row['macs_reduction']:.1%} "
            f"| {row['top1_after_prune']:.2f} | {row['top1_after_bn_recalibration']:.2f} "
            f"| {row['top1_after_finetune']:.2f} |"
        )


if __name__ == "__main__":
    main()
