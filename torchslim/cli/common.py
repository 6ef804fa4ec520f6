"""Arguments and model loading shared by several commands."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchslim.errors import ModelError
from torchslim.models import build_model, canonical_name, load_model, load_pretrained, resolve_spec


def add_model_arguments(
    parser: argparse.ArgumentParser, *, saved: bool = True, required: bool = False
) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        help="Model to build: a registered name (mobilenet_v1, mobilenet_v2, resnet34, or a seed alias such as "
        "MobileNetV2), torchvision:<name> for any torchvision classifier, or path/to/file.py:factory / "
        "package.module:factory for your own nn.Module.",
    )
    if saved:
        group.add_argument(
            "--model-path",
            help="Directory of a saved (e.g. pruned) model written by torchslim (manifest.json + model.safetensors). "
            "If it was built by your own factory, also pass that factory as --model to trust its code.",
        )
    group.add_argument(
        "--num-classes", type=int, default=None, help="Number of output classes (default 1000)."
    )
    group.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="Square input resolution in pixels (default: the model's, 224).",
    )
    group.add_argument(
        "--pretrained",
        help="Local state-dict file (.pth/.pt via torch.load weights_only, or .safetensors) to load into the model.",
    )


@dataclass
class LoadedModel:
    model: nn.Module
    name: str  # canonical base model name
    kwargs: dict[str, Any]
    input_size: int
    manifest: dict[str, Any] | None = None  # set for saved models

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.randn(
            batch, 3, self.input_size, self.input_size, generator=torch.Generator().manual_seed(0)
        )


def load_model_from_args(args: argparse.Namespace) -> LoadedModel:
    """Build ``--model`` (with ``--pretrained``) or load ``--model-path``."""
    model_path = getattr(args, "model_path", None)
    if model_path:  # --model beside --model-path names the user factory the manifest may import
        model, manifest = load_model(model_path, trusted=args.model)
        size = args.input_size or manifest.get("input_size", 224)
        return LoadedModel(model, manifest["model"], manifest.get("kwargs", {}), size, manifest)
    if not args.model:
        raise ModelError(
            "no model given: pass --model NAME"
            + (" or --model-path DIR" if hasattr(args, "model_path") else "")
        )
    spec = resolve_spec(args.model)
    kwargs = {"num_classes": args.num_classes} if args.num_classes is not None else {}
    model = build_model(args.model, **kwargs)
    if args.pretrained:
        load_pretrained(model, args.pretrained)
    return LoadedModel(model.eval(), canonical_name(args.model), kwargs, args.input_size or spec.input_size)
