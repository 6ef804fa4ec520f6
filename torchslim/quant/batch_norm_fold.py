"""Folding batch norms into the convolutions before quantization-aware training.

QAT trains the graph ORT will run, where every conv-BN pair is one convolution; a graph without
batch norms also converts in a fraction of the time (torchao's conv-BN folding at convert traces
dozens of patterns). The float model keeps its architecture: its folded batch norms become exact
identities plus a bias (weight 1, mean 0, var 1, ``eps`` 0), so checkpoints and saved models keep
their format, and folding such a model again changes nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class FoldedPair:
    conv: str
    norm: str


def conv_norm_pairs(model: nn.Module) -> list[FoldedPair]:
    """Conv -> BatchNorm pairs where the norm reads only that conv and the conv feeds only the norm;
    none when the model cannot be traced symbolically (it is then trained with its batch norms)."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure just means "do not fold"
        return []
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), NORMS):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), CONVS)
            and len(source.users) == 1
        ):
            pairs.append(FoldedPair(source.target, node.target))
    return pairs


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


@torch.no_grad()
def neutralise(model: nn.Module, pairs: list[FoldedPair]) -> None:
    """Fold each pair's norm into its conv in place; the norm keeps only a bias (an exact identity
    plus that bias in eval mode). A norm already neutral is left as it is, so a resumed run folds
    exactly as the run it resumes did."""
    for pair in pairs:
        conv, norm = model.get_submodule(pair.conv), model.get_submodule(pair.norm)
        if _is_neutral(norm):  # folded before (a saved model loads with the default eps again)
            norm.eps = 0.0
            continue
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        if conv.bias is not None:
            shift = shift + conv.bias * scale
            conv.bias.zero_()
        conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        norm.weight.fill_(1.0)
        norm.bias.copy_(shift)
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0)
        norm.eps = 0.0


def _is_neutral(norm: nn.Module) -> bool:
    return bool(
        torch.all(norm.weight == 1) and torch.all(norm.running_mean == 0) and torch.all(norm.running_var == 1)
    )


def fused_copy(model: nn.Module, pairs: list[FoldedPair]) -> nn.Module:
    """A copy of a neutralised model with each pair as one conv with bias, the norm an Identity."""
    fused = copy.deepcopy(model)
    for pair in pairs:
        conv, norm = fused.get_submodule(pair.conv), fused.get_submodule(pair.norm)
        bias = norm.bias.detach().clone()
        if conv.bias is not None:
            bias = bias + conv.bias.detach()
        conv.bias = nn.Parameter(bias)
        _set_module(fused, pair.norm, nn.Identity())
    return fused


@torch.no_grad()
def write_back(model: nn.Module, trained: dict[str, torch.Tensor], pairs: list[FoldedPair]) -> None:
    """Copy the weights of a trained fused copy (its state dict) into the neutralised float model."""
    folded = {pair.conv: pair.norm for pair in pairs}
    for name, tensor in model.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if module in folded.values():
            continue  # the norm's bias comes from its conv below; the rest stays neutral
        if module in folded and leaf == "bias":
            continue
        tensor.copy_(trained[name])
    for conv_name, norm_name in folded.items():
        conv = model.get_submodule(conv_name)
        model.get_submodule(norm_name).bias.copy_(trained[f"{conv_name}.bias"])
        if conv.bias is not None:
            conv.bias.zero_()
