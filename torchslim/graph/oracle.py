"""The correctness oracle: the unpruned model with the removed channels ignored, and the comparison
that says whether the pruned model computes the same function."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import PruningError
from torchslim.nn import eval_mode

from .channel_graph import layer_weight
from .groups import GroupSet


@torch.no_grad()
def oracle_reference(model: nn.Module, group_set: GroupSet, mask: np.ndarray) -> nn.Module:
    """A copy of the unpruned model whose consumers ignore the removed channels.

    Zeroing the input weights of every conv/linear/attention layer at removed positions
    is the unpruned model's view of "these channels are gone"; a LayerNorm whose channels
    are partly removed normalises over the kept ones only. The pruned model must compute
    the same function.
    """
    reference = copy.deepcopy(model)
    modules = dict(reference.named_modules())
    for use in group_set.graph.consumers():
        weight = layer_weight(modules[use.module])
        drop = torch.from_numpy(np.nonzero(~group_set.kept(use.in_ids, mask))[0])
        weight.index_fill_(1, drop.to(weight.device), 0.0)
    for use in group_set.graph.uses_of("layer_norm"):
        keep = group_set.kept(use.in_ids, mask)
        if not keep.all() and not isinstance(modules[use.module], _KeptChannelsLayerNorm):
            parent, _, name = use.module.rpartition(".")
            setattr(modules[parent], name, _KeptChannelsLayerNorm(modules[use.module], keep))
    return reference


class _KeptChannelsLayerNorm(nn.Module):
    """A LayerNorm over the last axis that reads only the kept channels (removed ones give zeros)."""

    def __init__(self, norm: nn.LayerNorm, keep: np.ndarray) -> None:
        super().__init__()
        self.norm = norm
        self.register_buffer("keep", torch.from_numpy(np.nonzero(keep)[0]).to(norm.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm, keep = self.norm, self.keep
        weight = norm.weight[keep] if norm.weight is not None else None
        bias = norm.bias[keep] if norm.bias is not None else None
        kept = F.layer_norm(x.index_select(-1, keep), (len(keep),), weight, bias, norm.eps)
        return torch.zeros_like(x).index_copy(-1, keep, kept)


def compare_outputs(
    reference: nn.Module, pruned: nn.Module, example_input: torch.Tensor, rtol: float = 1e-4
) -> tuple[float, bool]:
    """Max |difference| of the eval-mode outputs, and whether it is within ``rtol`` of the output scale.

    Some models amplify float32 rounding until it swamps their outputs (at random init, attention
    with huge logits: the unpruned model's own float32 and float64 outputs differ past ``rtol``).
    When float32 finds a difference, copies of both models compare again in float64, at the same
    tolerance: a wrong cut still differs there, rounding noise does not. A pruned model that does not
    run, or gives outputs of another shape, is refused (PruningError naming the layer it failed in).
    """
    expected, actual = _outputs(reference, example_input), _pruned_outputs(pruned, example_input)
    if actual.shape != expected.shape:
        raise PruningError(
            f"the pruned model gives outputs of shape {tuple(actual.shape)}, not {tuple(expected.shape)}; "
            "the cut is refused (a torchslim bug: please report it)"
        )
    difference, same = _compared(expected, actual, rtol)
    if same or not example_input.is_floating_point() or example_input.dtype == torch.float64:
        return difference, same
    try:
        expected = _outputs(copy.deepcopy(reference).double(), example_input.double())
        actual = _outputs(copy.deepcopy(pruned).double(), example_input.double())
    except (RuntimeError, TypeError):  # an op or a device without float64: the float32 verdict stands
        return difference, same
    return _compared(expected, actual, rtol)


def _compared(expected: torch.Tensor, actual: torch.Tensor, rtol: float) -> tuple[float, bool]:
    difference = float((expected - actual).abs().max())
    scale = float(expected.abs().max())
    return difference, difference <= rtol * max(scale, 1.0) + 1e-5


def _pruned_outputs(pruned: nn.Module, example_input: torch.Tensor) -> torch.Tensor:
    """The pruned model's outputs, or a refusal that names the innermost layer running when it failed
    (a reshape that no longer fits, a layer reading more channels than it gets)."""
    names = {module: name for name, module in pruned.named_modules()}
    running: list[str] = []

    def enter(module: nn.Module, _) -> None:
        running.append(names[module])

    def leave(module: nn.Module, _, __) -> None:
        running.pop()  # a hook that returned something would replace the output

    hooks = [m.register_forward_pre_hook(enter) for m in names] + [
        m.register_forward_hook(leave) for m in names
    ]
    try:
        return _outputs(pruned, example_input)
    except Exception as error:  # any failure of the pruned forward is a refused cut
        where = running[-1] if running else ""
        place = f" in {where} ({type(dict(pruned.named_modules())[where]).__name__})" if where else ""
        lines = str(error).strip().splitlines()
        raise PruningError(
            f"the pruned model fails on input {tuple(example_input.shape)}{place}: {type(error).__name__}: "
            f"{lines[0] if lines else ''}; the cut is refused (a torchslim bug: please report it)"
        ) from error
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def _outputs(model: nn.Module, example_input: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        return model(example_input)
