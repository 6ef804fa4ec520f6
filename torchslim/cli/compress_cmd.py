"""``compress``: run a seed-schema config (prune, fine-tune, checkpoint, export)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from torchslim.compress.compressor import CompressionSummary, Compressor
from torchslim.compress.dry_run import plan_strategies
from torchslim.config import LR_STRATEGIES, apply_overrides, load_config
from torchslim.errors import ConfigError
from torchslim.pruning.counting import human

from . import flags
from .common import add_command, data_help
from .output import emit_json, log, table

# flag destination -> dotted config key
OVERRIDES = {
    "model": "train.model",
    "pretrained_model": "compressor.init_model",
    "data": "train.data",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "lr_strategy": "train.lr_strategy",
    "l2_decay": "train.l2_decay",
    "momentum_rate": "train.momentum_rate",
    "num_epochs": "compressor.epoch",
    "step_epochs": "train.step_epochs",
    "checkpoint_path": "compressor.checkpoint_path",
    "train_limit": "train.train_limit",
    "val_limit": "train.val_limit",
    "device": "train.device",
    "num_classes": "train.num_classes",
    "input_size": "train.input_size",
    "num_workers": "train.num_workers",
    "seed": "train.seed",
    "total_images": "train.total_images",
}


def add_parsers(subparsers) -> None:
    parser = add_command(
        subparsers,
        "compress",
        run_compress,
        help="Prune and fine-tune a model as a seed-schema YAML config says.",
        description="Run the strategies of a PaddleSlim-schema config (pruners, strategies, compressor): "
        "build the model and data, prune at each strategy's start epoch, fine-tune, and write a "
        "checkpoint, an eval model and an ONNX inference model every epoch under checkpoint_path. "
        "A restarted run resumes from the newest complete checkpoint. Flags override the config file. "
        "The seed's underscore spellings (--batch_size, --config_file, --use_gpu ...) work too.",
    )
    parser.add_argument(
        "--config", "--config_file", dest="config", required=True, help="The YAML config file."
    )
    parser.add_argument("--model", help="Model name (default: train.model in the config, else mobilenet_v1).")
    parser.add_argument(
        "--pretrained-model",
        "--pretrained_model",
        "--pretrained",
        dest="pretrained_model",
        help="Weights file or saved model directory to start from (compressor.init_model).",
    )
    parser.add_argument("--data", help=data_help("."))
    parser.add_argument(
        "--checkpoint-path",
        "--checkpoint_path",
        dest="checkpoint_path",
        help="Where checkpoints go (per epoch).",
    )
    _add_training_arguments(parser)
    _add_data_arguments(parser)
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default).")
    parser.add_argument(
        "--use_gpu",
        "--use-gpu",
        dest="use_gpu",
        choices=["True", "False", "true", "false"],
        help="Seed spelling: True means --device cuda, False --device cpu.",
    )
    parser.add_argument("--dry-run", action="store_true", help="Print the pruning plan without training.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bars.")


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The fine-tuning recipe (train.* and compressor.epoch), each with the seed's spelling too."""
    for flag, kind, text in (
        ("batch-size", flags.positive_int, "Images per batch."),
        ("lr", flags.positive_float, "Initial learning rate."),
        ("lr-strategy", str, f"{' or '.join(LR_STRATEGIES)}."),
        ("l2-decay", flags.non_negative_float, "L2 weight decay."),
        ("momentum-rate", flags.non_negative_float, "SGD momentum."),
        ("num-epochs", flags.non_negative_int, "Total epochs (compressor.epoch)."),
        ("total-images", int, argparse.SUPPRESS),
    ):
        spellings = [f"--{flag}"] + ([f"--{flag.replace('-', '_')}"] if "-" in flag else [])
        parser.add_argument(*spellings, dest=flag.replace("-", "_"), type=kind, help=text)
    parser.add_argument(
        "--step-epochs",
        "--step_epochs",
        dest="step_epochs",
        type=flags.positive_int,
        nargs="+",
        help="Piecewise decay epochs.",
    )
    parser.add_argument("--seed", type=flags.seed, help="Random seed.")


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--train-limit", type=flags.positive_int, help="Use only the first N training images."
    )
    parser.add_argument(
        "--val-limit", type=flags.positive_int, help="Use only the first N validation images."
    )
    parser.add_argument("--num-classes", type=flags.class_count, help="Classes (default: the dataset's).")
    parser.add_argument(
        "--input-size", type=flags.input_size, help="Input resolution (default: the dataset's)."
    )
    parser.add_argument("--num-workers", type=flags.worker_count, help="Data loader worker processes.")
    parser.add_argument(
        "--skip-bad-images", action="store_true", help="Skip (and count) image files that cannot be decoded."
    )


def config_from_args(args: argparse.Namespace):
    config = load_config(args.config)
    overrides: dict[str, Any] = {
        key: getattr(args, flag) for flag, key in OVERRIDES.items() if getattr(args, flag) is not None
    }
    if args.use_gpu is not None:
        if args.device is not None:
            raise ConfigError("give either --device or --use_gpu, not both")
        overrides["train.device"] = "cuda" if args.use_gpu.lower() == "true" else "cpu"
    return apply_overrides(config, overrides) if overrides else config


def run_compress(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    compressor = Compressor(config, progress=progress, skip_bad_images=args.skip_bad_images)
    if args.dry_run:
        plans = plan_strategies(compressor)
        if args.json:
            emit_json({"dry_run": True, "strategies": plans})
        else:
            for plan in plans:
                print(_plan_text(plan))
        return 0
    summary = compressor.run()
    if not compressor.dist.is_main:  # under torchrun only rank 0 reports
        return 0
    bad_images = compressor.data.bad_images if compressor.data is not None else 0
    if bad_images:
        log(f"skipped {bad_images} unreadable images")
    if args.json:
        emit_json({**summary.as_dict(), **({"bad_images_skipped": bad_images} if bad_images else {})})
    else:
        print(summary_table(summary))
    return 0


def _plan_text(plan: dict[str, Any]) -> str:
    lines = [
        f"strategy {plan['strategy']} ({plan['class']}) at epoch {plan['start_epoch']}: "
        f"pruned_params {plan['pruned_params']!r} matches {plan['matched_params']} parameters, "
        f"{plan['groups_prunable']} prunable groups ({plan['groups_skipped']} kept)",
        f"  target: remove {plan['target_ratio']:.0%} of MACs -> {human(plan['macs_before'])} to "
        f"{human(plan['macs_after'])} ({plan['flops_reduction']:.2%} removed)",
    ]
    return "\n".join(lines)


def summary_table(summary: CompressionSummary) -> str:
    def row(label: str, stats) -> list[str]:
        acc = "-" if stats.top1 is None else f"{stats.top1:.2f}/{stats.top5:.2f}"
        return [label, human(stats.macs), acc, human(stats.params), human(stats.size_bytes, "B")]

    removed = 1 - summary.after.macs / summary.before.macs
    text = table(
        ["model", "MACs", "top1/top5", "params", "size"],
        [row("before", summary.before), row("after", summary.after)],
    )
    text += f"\nMACs removed: {removed:.2%}"
    for event in summary.events:
        if "top1_after_prune" in event:
            text += f"\ntop-1 right after pruning at epoch {event['epoch']}: {event['top1_after_prune']:.2f}%"
        if "top1_after_bn_recalibration" in event:
            text += f", after BN re-estimation: {event['top1_after_bn_recalibration']:.2f}%"
        if "top1_after_reconstruction" in event:
            text += f", after reconstruction: {event['top1_after_reconstruction']:.2f}%"
        if event.get("latency_plan", {}).get("chosen"):
            plan = event["latency_plan"]
            how = ", ".join(f"{e['plan']} {e['score']:.2f}%" for e in plan.get("scores") or [])
            text += (
                f"\nlatency-aware plan: the {plan['chosen']} plan, measured kernel speedup "
                f"{plan['measured_speedup']:.2f}x, chosen by "
                + (f"validation top-1 among the near-fastest ({how})" if how else "speed")
            )
        if "int8_summary" in event:
            text += f"\n{event['int8_summary']} -> {event['int8']['path']}"
        if "teacher_percent_of_epoch" in event:
            share = event["teacher_percent_of_epoch"]
            text += f"\ndistillation at epoch {event['epoch']}: teacher took {share:.0f}% of the epoch"
    if summary.top1_per_epoch:
        text += "\ntop-1 after each fine-tune epoch: " + ", ".join(
            f"epoch {epoch}: {top1:.2f}%" for epoch, top1 in summary.top1_per_epoch.items()
        )
    if summary.last_checkpoint:
        text += (
            f"\nlast checkpoint: {summary.last_checkpoint} "
            "(eval model in eval_model/, ONNX in eval_model/model.onnx)"
        )
    return text
