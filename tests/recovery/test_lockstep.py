"""Stepping the unpruned and the pruned graph together: at each stop the layer's inputs are what a fresh
forward pass of the pruned model (with every earlier rewrite) would feed it, its outputs the unpruned
model's, and weights written at a stop are the ones later layers see."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from torchslim.errors import PruningError
from torchslim.graph import apply_plan, removed_mask
from torchslim.pruning.prune import analyze
from torchslim.recovery.lockstep import Lockstep


class Residual(nn.Module):
    """conv -> bn -> relu, a residual add, a second conv, pooling and a linear head: every kind of step."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 6, 1)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.stem(x)).relu()
        y = y + self.body(y).relu()
        return self.head(self.tail(y).mean((2, 3)))


def pruned_pair():
    torch.manual_seed(0)
    model = Residual().eval()
    with torch.no_grad():
        model.norm.running_mean.uniform_(-1, 1)
    group_set = analyze(model, torch.randn(1, 3, 8, 8))
    units = {g.index: np.array([1, 5]) for g in group_set.prunable()}
    pruned = apply_plan(copy.deepcopy(model), group_set, removed_mask(group_set, units))
    return model, pruned.eval()


def captured_input(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: seen.append(a[0]))
    with torch.no_grad():
        model(images)
    handle.remove()
    return torch.cat(seen)


def test_stops_see_the_inputs_a_fresh_forward_would_after_earlier_rewrites():
    model, pruned = pruned_pair()
    images = torch.randn(10, 3, 8, 8)
    chunks = list(images.split(4))  # 4 + 4 + 2: the chunks must line up with each other
    names = ["body", "tail", "head"]
    visited = []
    with torch.no_grad():
        for stop in Lockstep(model, pruned).stops(chunks, set(names)):
            visited.append(stop.name)
            torch.testing.assert_close(torch.cat(stop.inputs), captured_input(pruned, stop.name, images))
            torch.testing.assert_close(torch.cat(stop.outputs), _output(model, stop.name, images))
            layer = dict(pruned.named_modules())[stop.name]
            layer.weight.mul_(2.0)  # a refit: every later stop must see its effect
    assert visited == names


def _output(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: seen.append(o))
    with torch.no_grad():
        model(images)
    handle.remove()
    return torch.cat(seen)


def test_a_stop_names_the_batch_norm_that_reads_the_layer():
    model, pruned = pruned_pair()
    with torch.no_grad():
        norms = {
            s.name: s.norm for s in Lockstep(model, pruned).stops([torch.randn(2, 3, 8, 8)], {"stem", "body"})
        }
    assert norms == {"stem": "norm", "body": None}


def test_image_cost_grows_with_the_pixels_and_counts_both_graphs():
    model, pruned = pruned_pair()
    stepper = Lockstep(model, pruned)
    small = stepper.image_cost(torch.randn(1, 3, 8, 8))
    large = stepper.image_cost(torch.randn(1, 3, 16, 16))
    assert large.live_bytes == pytest.approx(4 * small.live_bytes, rel=0.1)  # activations scale with pixels
    assert small.live_bytes > 2 * 8 * 8 * 8 * 4  # at least one 8-channel map per graph, float32
    convs = 64 * (8 * 27 + 8 * 72 + 6 * 8)  # unpruned stem, body, tail on an 8x8 image
    pruned_convs = 64 * (6 * 27 + 6 * 54 + 4 * 6)  # 2 units gone from both groups: 8 -> 6, 6 -> 4
    heads = 6 * 4 + 4 * 4
    assert small.macs == convs + pruned_convs + heads
    assert large.macs - heads == 4 * (small.macs - heads)  # the heads' MACs do not grow with the image


def test_models_that_trace_differently_are_refused():
    model, _ = pruned_pair()
    with pytest.raises(PruningError, match="different graphs"):
        Lockstep(model, nn.Sequential(nn.Conv2d(3, 4, 1)))
