"""Criteria that need data: channel scores from activations (and gradients) over a few batches.

Removing a unit of a group means its channels vanish from the inputs of every
conv / linear layer that consumes them (the correctness oracle zeroes exactly
those input positions). So these criteria measure the *input positions of the
consumer layers*, which is what pruning really takes away:

- ``taylor``: the first-order Taylor estimate of the loss change when a channel
  is zeroed (Molchanov et al., 2017): per sample ``|sum over space of a * dL/da|``,
  summed over samples and batches. Scores of several consumers of one unit add
  up raw, since they are estimates of one quantity (loss change).
- ``activation_mean``: mean ``|a|`` per channel; a channel that is usually near
  zero carries little. Each consumer's scores are divided by their mean before
  they are summed, like the weight criteria.

A data criterion is two steps, so that whoever owns the data (a strategy, the
compressor, the ``sensitivity`` command) feeds it batches before scoring::

    prepare_data_criterion(model, "taylor", islice(train_loader, 8), device=device)
    scores = score_group(group_set, group, model, "taylor")   # reads what was prepared

The prepared per-layer scores are kept per model object (weakly, so they go
away with the model). Scoring a layer whose input width changed since (the model
was pruned) or a model never prepared raises :class:`PruningError`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import PruningError
from torchslim.graph import Group, GroupSet

DEFAULT_BATCHES = 8
"""Batches a strategy feeds a data criterion by default (8 x 64 images gives stable rankings on
Fashion-MNIST; the ranking of the lowest channels barely moves between 4 and 16 batches)."""

Accumulator = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _channel_last(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """(samples, positions, channels) view: conv inputs are (N, C, ...), linear inputs (N, ..., F)."""
    if isinstance(module, nn.Linear):
        return tensor.reshape(tensor.shape[0], -1, tensor.shape[-1])
    return tensor.reshape(tensor.shape[0], tensor.shape[1], -1).transpose(1, 2)


@dataclass(frozen=True)
class DataCriterion:
    """A registered criterion whose scores come from running the model on batches."""

    name: str
    needs_grad: bool
    normalize_members: bool
    description: str

    def collect(self, model: nn.Module, batches: Iterable, device: torch.device) -> dict[str, np.ndarray]:
        """Per conv/linear module name: one score per input position (channel / feature)."""
        layers = [
            (n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)
        ]
        totals: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}

        def add(name: str, value: torch.Tensor, samples: int) -> None:
            totals[name] = totals[name] + value if name in totals else value
            counts[name] = counts.get(name, 0) + samples

        def forward_hook(name: str, module: nn.Module):
            def hook(_module, inputs, _output):
                activation = inputs[0]
                if not isinstance(activation, torch.Tensor):
                    return
                if not self.needs_grad:
                    flat = _channel_last(module, activation.detach().float())
                    add(name, flat.abs().mean(1).sum(0), flat.shape[0])
                elif activation.requires_grad:
                    saved = activation.detach()

                    def on_grad(grad: torch.Tensor) -> None:
                        product = _channel_last(module, (saved * grad.detach()).float())
                        add(name, product.sum(1).abs().sum(0), product.shape[0])

                    activation.register_hook(on_grad)

            return hook

        handles = [m.register_forward_hook(forward_hook(n, m)) for n, m in layers]
        was_training = model.training
        saved_grads = {p: p.grad for p in model.parameters()}
        model.eval()
        seen = 0
        try:
            for batch in batches:
                images, targets = batch[0].to(device), batch[1].to(device)
                if self.needs_grad:
                    with torch.enable_grad():
                        loss = F.cross_entropy(model(images), targets, reduction="sum")
                        loss.backward()
                else:
                    with torch.no_grad():
                        model(images)
                seen += 1
        finally:
            for handle in handles:
                handle.remove()
            for parameter, grad in saved_grads.items():
                parameter.grad = grad
            model.train(was_training)
        if seen == 0:
            raise PruningError(f"criterion {self.name!r} got no batches to score channels on")
        return {
            name: (total / (counts[name] if not self.needs_grad else 1)).double().cpu().numpy()
            for name, total in totals.items()
        }

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
        for use in group_set.graph.uses:
            if use.role not in ("conv", "linear") or use.in_ids is None:
                continue
            positions, units = group_set.positions(use.in_ids, group)
            if not len(positions):
                continue
            layer = prepared.get(use.module)
            if layer is None:
                continue
            if len(layer) != len(use.in_ids):
                raise PruningError(
                    f"criterion {self.name!r}: scores of {use.module} were prepared for {len(layer)} inputs, "
                    f"the layer now has {len(use.in_ids)}; prepare the criterion again after pruning"
                )
            member = layer[positions]
            mean = member.mean()
            if self.normalize_members and mean > 0:
                member = member / mean
            np.add.at(scores, units, member)
            found = True
        if not found:  # nothing consumes these channels inside the model: fall back on filter magnitudes
            modules = dict(model.named_modules())
            for name in group.sources:
                weight = modules[name].weight.detach()
                positions, units = group_set.positions(group_set.graph.sources[name], group)
                np.add.at(scores, units, weight.abs().flatten(1).sum(1).double().cpu().numpy()[positions])
        return scores


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
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    layers = criterion.collect(model, islice(batches, max_batches), torch.device(device))
    _PREPARED.setdefault(model, {})[criterion.name] = layers


def data_criterion(name: str) -> DataCriterion | None:
    """The data criterion called ``name`` (case-insensitive), or None for a weight criterion."""
    return next((c for c in DATA_CRITERIA if c.name == name.lower()), None)


def forget_data_criterion(model: nn.Module) -> None:
    """Drop the prepared scores of ``model`` (all criteria)."""
    _PREPARED.pop(model, None)
