"""Running a model without changing it: a train or eval mode that is always undone, one zero image."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; afterwards every submodule has its own mode back,
    also when the block raises (a model half in training mode would train its batch norms wrongly)."""
    with _mode(model, training=False):
        yield model


@contextlib.contextmanager
def train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in train mode inside the block, every submodule's own mode restored afterwards."""
    with _mode(model, training=True):
        yield model


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, was_training in modes:
            module.training = was_training


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


Hook = Callable[[str, nn.Module, tuple, object], None]


@torch.no_grad()
def zero_image_pass(
    model: nn.Module, layer_types: tuple[type, ...], on_call: Hook, input_size: int, in_channels: int = 3
) -> None:
    """One eval-mode forward pass on a zero image of ``input_size``; ``on_call(name, module, inputs,
    output)`` is called for every call of a submodule of ``layer_types``. The model is left as it was."""
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, layer_types):
            hook = _named_hook(name, on_call)
            handles.append(module.register_forward_hook(hook))
    try:
        with eval_mode(model):
            model(torch.zeros(1, in_channels, input_size, input_size, device=model_device(model)))
    finally:
        for handle in handles:
            handle.remove()


def _named_hook(name: str, on_call: Hook):
    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        on_call(name, module, inputs, output)

    return hook
