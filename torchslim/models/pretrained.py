"""Loading local weight files into a model, with errors that name the mismatching key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.errors import ModelError

from .zoo import build_model, resolve_spec

# Keys under which common training scripts nest the state dict.
_NESTED_KEYS = ("state_dict", "model", "model_state", "net")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to read is the file's fault
        raise ModelError(
            f"cannot read weights file {path}: {type(error).__name__}: {unpickling_reason(error)}"
        ) from None
    for key in _NESTED_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ModelError naming the first key whose presence or shape differs."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise ModelError(f"{source}: missing key {key!r} (shape {tuple(tensor.shape)}); wrong model?")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelError(
                f"{source}: shape mismatch at {key!r}: file has {tuple(state[key].shape)}, "
                f"model expects {tuple(tensor.shape)}; wrong model or num_classes?"
            )
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise ModelError(
            f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} in all); wrong model?"
        )


def load_pretrained(model: nn.Module, path: str | Path) -> nn.Module:
    state = read_state_dict(path)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    return model


@dataclass
class BuiltModel:
    """A model built from a weights file: the build keyword arguments used, and the input size the
    file's own configuration names (None: it names none)."""

    model: nn.Module
    kwargs: dict[str, Any]
    input_size: int | None


def build_pretrained(name: str, path: str | Path, kwargs: dict[str, Any]) -> BuiltModel:
    """Build ``name`` as the weights file ``path`` describes (``kwargs`` win) and load the weights."""
    state = read_state_dict(path)
    spec = resolve_spec(name)
    config = spec.weights_config(Path(path), state) if spec.weights_config is not None else None
    kwargs = {**(config.kwargs if config else {}), **kwargs}
    model = build_model(name, **kwargs)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    return BuiltModel(model, kwargs, config.input_size if config else None)


def unpickling_reason(error: BaseException) -> str:
    """One line saying why loading failed; for ``torch.load(weights_only=True)`` refusals, the refused
    object (e.g. ``unsupported GLOBAL posix.system``) rather than torch's multi-line advice."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        detail = [
            line
            for line in lines[1:]
            if not line.startswith(("Check the documentation", "Please file an issue"))
        ]
        return "torch.load(weights_only=True) refused it, as it is not a plain state dict of tensors" + (
            f": {'; '.join(detail)}" if detail else ""
        )
    return lines[0] if lines else type(error).__name__
