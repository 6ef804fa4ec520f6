#!/usr/bin/env python
"""Prune and fine-tune an image classifier as a YAML config says (the seed's compress.py, on torchslim).

Builds the model, data and optimizer and runs the config's strategies through
torchslim's Compressor: a checkpoint, an eval model and an ONNX inference model
are written every epoch under the config's checkpoint_path, and a restarted job
resumes from the newest checkpoint. Flags override the config's train: section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchslim.cli.main import main
from torchslim.errors import TorchslimError
from torchslim.models import canonical_name

CONFIGS = Path(__file__).resolve().parent / "configs"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__,
        allow_abbrev=False,  # unknown flags pass through to torchslim unchanged
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other `torchslim compress` flag (--data, --checkpoint_path, --dry-run, --json, ...) is "
        "passed through; see `torchslim compress --help`.",
    )
    parser.add_argument(
        "--use_gpu", choices=["True", "False"], help="Train on a GPU (default: when there is one)."
    )
    parser.add_argument("--batch_size", type=int, help="Minibatch size (default: the config's).")
    parser.add_argument("--model", help="MobileNet (V1), MobileNetV2, ResNet34 or any torchslim model name.")
    parser.add_argument(
        "--pretrained_model", help="Pretrained weights (.pth/.safetensors) or a saved model dir."
    )
    parser.add_argument(
        "--config_file", help="The YAML config (default: configs/<model>.yaml next to this script)."
    )
    parser.add_argument("--lr", type=float, help="Initial learning rate of the fine-tuning.")
    parser.add_argument(
        "--lr_strategy", choices=["piecewise_decay", "cosine_decay"], help="Learning rate decay."
    )
    parser.add_argument("--l2_decay", type=float, help="L2 weight decay.")
    parser.add_argument("--momentum_rate", type=float, help="SGD momentum.")
    parser.add_argument(
        "--num_epochs", type=int, help="Number of epochs in all (the config's compressor.epoch)."
    )
    parser.add_argument(
        "--step_epochs", type=int, nargs="+", help="Epochs where piecewise decay divides lr by 10."
    )
    parser.add_argument(
        "--total_images", type=int, help="Accepted for compatibility; the data set's size is used."
    )
    return parser.parse_known_args(argv)


def default_config(model: str | None) -> str:
    """configs/<model>.yaml for the seed's three models (MobileNetV1 when no --model is given)."""
    try:
        name = canonical_name(model or "mobilenet_v1")
    except TorchslimError:
        name = model
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        print(
            f"compress.py: error: no config for model {model!r} in {CONFIGS}; give --config_file",
            file=sys.stderr,
        )
        sys.exit(2)
    return str(path)


def torchslim_argv(args: argparse.Namespace, rest: list[str]) -> list[str]:
    argv = ["compress", "--config", args.config_file or default_config(args.model)]
    for flag, value in vars(args).items():
        if flag != "config_file" and value is not None:
            argv += [f"--{flag}", *map(str, value if isinstance(value, list) else [value])]
    return argv + rest


if __name__ == "__main__":
    sys.exit(main(torchslim_argv(*parse(sys.argv[1:]))))
