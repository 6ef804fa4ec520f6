"""The correctness oracle's comparison: does the pruned model compute what the masked one does?"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def _outputs(model: nn.Module, example_input: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(example_input)
    finally:
        model.train(was_training)


def compare_outputs(
    reference: nn.Module, pruned: nn.Module, example_input: torch.Tensor, rtol: float = 1e-4
) -> tuple[float, bool]:
    """Max |difference| of the eval-mode outputs, and whether it is within ``rtol`` of the output scale."""
    expected, actual = _outputs(reference, example_input), _outputs(pruned, example_input)
    difference = float((expected - actual).abs().max())
    scale = float(expected.abs().max())
    return difference, difference <= rtol * max(scale, 1.0) + 1e-5
