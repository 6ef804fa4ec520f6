"""Distillation losses and feature-map adapters."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from torchslim.errors import ModelError
from torchslim.nn import eval_mode


def soft_label_loss(
    outputs: torch.Tensor,
    teacher_outputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, targets)``, batch mean."""
    student = F.log_softmax(outputs.float() / temperature, dim=1)
    teacher = F.log_softmax(teacher_outputs.float() / temperature, dim=1)
    soft = F.kl_div(student, teacher, reduction="batchmean", log_target=True) * (temperature * temperature)
    hard = F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


def adapt(weight: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """The learned 1x1 map of ``feature``'s channels (dim 1) by ``weight`` (teacher x student channels)."""
    if feature.dim() == 2:
        return F.linear(feature, weight)
    return F.conv2d(feature, weight[:, :, None, None])


def initial_adapter(student_channels: int, teacher_channels: int, device: torch.device) -> torch.Tensor:
    """The identity while the layer keeps the teacher's channels. Else zeros (pruning does not say which
    teacher channel a kept one was), so that an untrained adapter sends no gradient into the student."""
    if student_channels == teacher_channels:
        return torch.eye(teacher_channels, device=device)
    return torch.zeros(teacher_channels, student_channels, device=device)


def average_gradient(param: torch.Tensor) -> None:
    """DDP averages the wrapped model's gradients; adapters live outside it, so theirs are averaged here."""
    dist.all_reduce(param.grad)
    param.grad.div_(dist.get_world_size())


def capture(store: dict[str, torch.Tensor], name: str, *, training_only: bool):
    """A forward hook keeping the module's output; a plain closure, so deep copies of the model share it."""

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if not training_only or (module.training and torch.is_grad_enabled()):
            store[name] = output

    return hook


def output_shapes(modules: dict[str, nn.Module], model: nn.Module, example: torch.Tensor) -> dict[str, tuple]:
    """The output shape of each named module for ``example`` (eval mode, no gradient, modes restored)."""
    shapes: dict[str, tuple] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor) or output.dim() not in (2, 4):
                what = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ModelError(
                    f"feature map {name!r}: the module outputs {what}; feature-map distillation needs an "
                    "(N, C) or (N, C, H, W) tensor"
                )
            shapes[name] = tuple(output.shape)

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in modules.items()]
    try:
        with torch.no_grad(), eval_mode(model):
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in modules if name not in shapes]
    if missing:
        raise ModelError(
            f"feature maps {', '.join(map(repr, missing))}: not called in the model's forward pass"
        )
    return shapes
