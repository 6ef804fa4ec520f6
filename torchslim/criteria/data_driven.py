"""Criteria that need data: channel scores from activations (and gradients) over a few batches.

Pruning a unit removes its channels from the inputs of every layer that consumes them, so these
criteria measure those consumers' input positions:

- ``taylor``: the first-order Taylor estimate of the loss change when a channel is zeroed (Molchanov
  et al., 2017), ``|sum over space of a * dL/da|`` summed over samples; consumers' scores add up raw.
- ``activation_mean``: mean ``|a|`` per channel, each consumer's scores divided by their mean.

Whoever owns the data feeds the batches first, then scores as for any criterion::

    prepare_data_criterion(model, "taylor", islice(train_loader, 8), device=device)
    scores = score_group(group_set, group, model, "taylor")

The prepared scores are kept weakly per model object; scoring an unprepared or since-pruned model
raises :class:`PruningError`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import PruningError
from torchslim.graph import Group, GroupSet
from torchslim.nn import eval_mode, model_device

DEFAULT_BATCHES = 8
"""Batches a strategy feeds a data criterion by default."""


@dataclass(frozen=True)
class DataCriterion:
    """A registered criterion whose scores come from running the model on batches."""

    name: str
    needs_grad: bool
    normalize_members: bool
    description: str

    def collect(self, model: nn.Module, batches: Iterable, device: torch.device) -> dict[str, np.ndarray]:
        """Per conv/linear module name: one score per input position (channel / feature)."""
        scores = _InputScores(self.needs_grad)
        handles = [
            module.register_forward_hook(scores.hook(name, module))
            for name, module in model.named_modules()
            if isinstance(module, nn.modules.conv._ConvNd | nn.Linear)
        ]
        saved_grads = {p: p.grad for p in model.parameters()}
        try:
            with eval_mode(model):
                seen = self._run(model, batches, device)
        finally:
            for handle in handles:
                handle.remove()
            for parameter, grad in saved_grads.items():
                parameter.grad = grad
        if seen == 0:
            raise PruningError(f"criterion {self.name!r} got no batches to score channels on")
        return scores.result()

    def _run(self, model: nn.Module, batches: Iterable, device: torch.device) -> int:
        """Forward (and, for a gradient criterion, backward) every batch; the number of batches."""
        seen = 0
        for batch in batches:
            images, targets = batch[0].to(device), batch[1].to(device)
            if self.needs_grad:
                with torch.enable_grad():
                    F.cross_entropy(model(images), targets, reduction="sum").backward()
            else:
                with torch.no_grad():
                    model(images)
            seen += 1
        return seen

    def score_group(self, group_set: GroupSet, group: Group, model: nn.Module) -> np.ndarray:
        """One score per unit of ``group`` from the prepared consumer-input scores."""
        prepared = _PREPARED.get(model, {}).get(self.name)
        if prepared is None:
            raise PruningError(
                f"criterion {self.name!r} needs data: call torchslim.criteria.prepare_data_criterion(model, "
                f"{self.name!r}, batches) before scoring (strategies and the sensitivity command do this)"
            )
        scores = np.zeros(group.size)
        found = False
        for consumer in group_set.consumers(group):
            layer = prepared.get(consumer.module)
            if layer is None:
                continue
            if len(layer) != len(consumer.use.in_ids):
                raise PruningError(
                    f"criterion {self.name!r}: scores of {consumer.module} were prepared for {len(layer)} "
                    f"inputs, the layer now has {len(consumer.use.in_ids)}; prepare the criterion again "
                    "after pruning"
                )
            member = layer[consumer.positions]
            mean = member.mean()
            if self.normalize_members and mean > 0:
                member = member / mean
            np.add.at(scores, consumer.units, member)
            found = True
        if not found:  # nothing consumes these channels inside the model: fall back on filter magnitudes
            _add_filter_magnitudes(scores, group_set, group, model)
        return scores


class _InputScores:
    """Sums, per layer and input position, what a data criterion measures on the batches."""

    def __init__(self, needs_grad: bool) -> None:
        self.needs_grad = needs_grad
        self.totals: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: torch.Tensor, samples: int) -> None:
        self.totals[name] = self.totals[name] + value if name in self.totals else value
        self.counts[name] = self.counts.get(name, 0) + samples

    def hook(self, name: str, module: nn.Module):
        """A forward hook on ``module``: mean |a| now, or |sum of a * dL/da| once the gradient arrives."""

        def on_forward(_module, inputs, _output):
            activation = inputs[0]
            if not isinstance(activation, torch.Tensor):
                return
            if not self.needs_grad:
                flat = _channel_last(module, activation.detach().float())
                self.add(name, flat.abs().mean(1).sum(0), flat.shape[0])
            elif activation.requires_grad:
                saved = activation.detach()

                def on_grad(grad: torch.Tensor) -> None:
                    product = _channel_last(module, (saved * grad.detach()).float())
                    self.add(name, product.sum(1).abs().sum(0), product.shape[0])

                activation.register_hook(on_grad)

        return on_forward

    def result(self) -> dict[str, np.ndarray]:
        """Per layer: the scores, averaged over samples (activation means) or summed (Taylor)."""
        return {
            name: (total / (self.counts[name] if not self.needs_grad else 1)).double().cpu().numpy()
            for name, total in self.totals.items()
        }


def _channel_last(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """(samples, positions, channels) view: conv inputs are (N, C, ...), linear inputs (N, ..., F)."""
    if isinstance(module, nn.Linear):
        return tensor.reshape(tensor.shape[0], -1, tensor.shape[-1])
    return tensor.reshape(tensor.shape[0], tensor.shape[1], -1).transpose(1, 2)


def _add_filter_magnitudes(scores: np.ndarray, group_set: GroupSet, group: Group, model: nn.Module) -> None:
    modules = dict(model.named_modules())
    for name in group.sources:
        weight = modules[name].weight.detach()
        positions, units = group_set.positions(group_set.graph.sources[name], group)
        np.add.at(scores, units, weight.abs().flatten(1).sum(1).double().cpu().numpy()[positions])


TAYLOR = DataCriterion(
    "taylor",
    needs_grad=True,
    normalize_members=False,
    description="first-order Taylor: |activation x gradient| per channel over a few batches",
)
ACTIVATION_MEAN = DataCriterion(
    "activation_mean",
    needs_grad=False,
    normalize_members=True,
    description="mean |activation| per channel over a few batches",
)
DATA_CRITERIA: tuple[DataCriterion, ...] = (TAYLOR, ACTIVATION_MEAN)

_PREPARED: weakref.WeakKeyDictionary[nn.Module, dict[str, dict[str, np.ndarray]]] = (
    weakref.WeakKeyDictionary()
)


def prepare_data_criterion(
    model: nn.Module,
    criterion: str | DataCriterion,
    batches: Iterable,
    *,
    device: str | torch.device | None = None,
    max_batches: int | None = DEFAULT_BATCHES,
) -> None:
    """Run ``model`` on up to ``max_batches`` of ``batches`` ((images, targets) pairs) and keep the scores.

    The model is left as it was: same train/eval mode, same ``.grad`` of every parameter.
    """
    if isinstance(criterion, str):
        name, criterion = criterion, data_criterion(criterion)
        if criterion is None:
            raise PruningError(f"{name!r} is not a data-driven criterion")
    device = model_device(model) if device is None else device
    layers = criterion.collect(model, islice(batches, max_batches), torch.device(device))
    _PREPARED.setdefault(model, {})[criterion.name] = layers


def data_criterion(name: str) -> DataCriterion | None:
    """The data criterion called ``name`` (case-insensitive), or None for a weight criterion."""
    return next((c for c in DATA_CRITERIA if c.name == name.lower()), None)
