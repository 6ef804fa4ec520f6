"""What the commands share: the parser class, command set-up, model arguments and model loading."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
from torch import nn

from torchslim.data import DEFAULT_DATA_SPEC, KNOWN_SCHEMES
from torchslim.data.spec import FASHION_MNIST_DIR
from torchslim.errors import ConfigError, ModelError
from torchslim.models import (
    MODELS,
    build_model,
    build_pretrained,
    canonical_name,
    load_model,
    resolve_spec,
    seed_param_names,
)
from torchslim.nn import eval_mode
from torchslim.registry import Registry

from . import flags

JSON_HELP = "Print one JSON object on stdout."


class FlagError(ConfigError):
    """A command line argparse rejected; ``prog`` is the command it was given to."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2, like every user error
    (instead of argparse's usage text and ``sys.exit``); a bad value reads ``--flag must be ...``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("exit_on_error", False)  # ArgumentErrors reach parse_known_args below
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        try:
            return super().parse_known_args(args, namespace)
        except argparse.ArgumentError as error:
            flag = (error.argument_name or "").split("/")[0]
            raise FlagError(self.prog, f"{flag} {error.message}".strip()) from None

    def error(self, message: str) -> NoReturn:
        raise FlagError(self.prog, message)


def add_command(
    subparsers, name: str, handler: Callable, *, help: str, description: str, json_help: str = JSON_HELP
) -> argparse.ArgumentParser:
    """A sub-command with its help, its handler and a ``--json`` flag."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.set_defaults(handler=handler)
    return parser


def pick(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The named attributes of ``args`` as keyword arguments."""
    return {name: getattr(args, name) for name in names}


def data_help(what: str = "") -> str:
    """The help of a ``--data`` flag: the spec forms the data package knows, then ``what`` it is for."""
    return (
        f"Data spec SCHEME:DIR, SCHEME one of {', '.join(KNOWN_SCHEMES)} ({DEFAULT_DATA_SPEC} alone reads "
        f"{FASHION_MNIST_DIR}){what}"
    )


def registered_names(registry: Registry) -> str:
    """``a, b, c (aliases: x, y)``, for help texts."""
    aliases = sorted(registry.aliases())
    return ", ".join(registry.list()) + (f" (aliases: {', '.join(aliases)})" if aliases else "")


def _model_help() -> str:
    return (
        f"Model to build: a registered name, {registered_names(MODELS)}, in any case; "
        "torchvision:<name> for any torchvision classifier; timm:<name> for any timm model "
        "(pip install torchslim[timm]; random init unless --pretrained); or path/to/file.py:factory / "
        "package.module:factory for your own nn.Module."
    )


def add_model_arguments(parser: argparse.ArgumentParser, *, saved: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help=_model_help())
    if saved:
        group.add_argument(
            "--model-path",
            help="Directory of a saved (e.g. pruned) model written by torchslim (manifest.json + "
            "model.safetensors). If it was built by your own factory, also pass that factory as --model "
            "to trust its code.",
        )
    group.add_argument(
        "--num-classes",
        type=flags.class_count,
        default=None,
        help=f"Number of output classes (default 1000; at most {flags.MAX_CLASSES}).",
    )
    group.add_argument(
        "--input-size",
        type=flags.input_size,
        default=None,
        help="Square input resolution in pixels (default: the model's, 224; "
        f"at most {flags.MAX_INPUT_SIZE}).",
    )
    group.add_argument(
        "--pretrained",
        help="Local state-dict file (.pth/.pt via torch.load weights_only, or .safetensors) to load into "
        "the model.",
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

    def seed_aliases(self) -> dict[str, str]:
        """PyTorch parameter name -> the seed's name, for registered models (none for others)."""
        return seed_param_names(self.name, self.model) if ":" not in self.name else {}


def load_model_from_args(args: argparse.Namespace) -> LoadedModel:
    """Build ``--model`` (with ``--pretrained``) or load ``--model-path``."""
    loaded = _saved_model(args) if getattr(args, "model_path", None) else _built_model(args)
    if args.input_size is not None:
        _check_runs_at(loaded)
    return loaded


def _saved_model(args: argparse.Namespace) -> LoadedModel:
    # --model beside --model-path names the user factory the manifest may import
    model, manifest = load_model(args.model_path, trusted=args.model)
    size = args.input_size or manifest.get("input_size", 224)
    return LoadedModel(model, manifest["model"], manifest.get("kwargs", {}), size, manifest)


def _built_model(args: argparse.Namespace) -> LoadedModel:
    if not args.model:
        raise ModelError(
            "no model given: pass --model NAME"
            + (" or --model-path DIR" if hasattr(args, "model_path") else "")
        )
    spec = resolve_spec(args.model)
    kwargs = {"num_classes": args.num_classes} if args.num_classes is not None else {}
    size = spec.input_size
    if args.pretrained:  # the file's own configuration (timm: classes, input size) fills the gaps
        built = build_pretrained(args.model, args.pretrained, kwargs)
        model, kwargs, size = built.model, built.kwargs, built.input_size or size
    else:
        model = build_model(args.model, **kwargs)
    return LoadedModel(model.eval(), canonical_name(args.model), kwargs, args.input_size or size)


@torch.no_grad()
def _check_runs_at(loaded: LoadedModel) -> None:
    """A model that cannot run on ``--input-size`` images (too small for its kernels) is a model error."""
    size = loaded.input_size
    try:
        with eval_mode(loaded.model):
            loaded.model(torch.zeros(1, 3, size, size))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"{loaded.name} cannot run on {size}x{size} images (--input-size): {reason}"
        ) from None
