"""Data-driven criteria (taylor, activation_mean): they find dead channels that weight norms miss, match a
hand computation, need data before scoring, go stale after pruning, and leave the model as it was."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.criteria import list_criteria, prepare_data_criterion, score_group
from torchslim.errors import PruningError
from torchslim.graph import apply_plan, removed_mask
from torchslim.pruning.prune import analyze
from torchslim.sensitivity.scan import group_scores

DEAD = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def net_with_a_dead_channel(flatten: bool = False) -> nn.Sequential:
    """conv(3->8)-BN-ReLU whose channel DEAD is always zero after the ReLU (BN shift -50), then a consumer.

    The dead channel's filter is the *largest* by norm, so weight criteria keep it and only data can tell.
    """
    torch.manual_seed(0)
    head = (
        [nn.Flatten(), nn.Linear(8 * 4 * 4, 5)]
        if flatten
        else [
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 5),
        ]
    )
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), *head)
    with torch.no_grad():
        model[0].weight[DEAD] *= 10
        model[1].bias[DEAD] = -50.0
    return model.eval()


def batches(count: int = 3, size: int = 8, side: int = 4, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(size, 3, side, side, generator=generator),
            torch.randint(0, 5, (size,), generator=generator),
        )
        for _ in range(count)
    ]


def first_group(model: nn.Module, side: int = 4):
    group_set = analyze(model, torch.zeros(1, 3, side, side))
    return group_set, next(g for g in group_set.prunable() if g.sources == ["0"])


@pytest.mark.parametrize("criterion", ["taylor", "activation_mean"])
@pytest.mark.parametrize("flatten", [False, True])
def test_dead_channel_scores_lowest_where_l1_keeps_it(criterion, flatten):
    model = net_with_a_dead_channel(flatten)
    group_set, group = first_group(model)
    prepare_data_criterion(model, criterion, batches())
    scores = score_group(group_set, group, model, criterion)
    assert scores.shape == (8,)
    assert int(np.argmin(scores)) == DEAD and scores[DEAD] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.delete(scores, DEAD) > 0)
    assert int(np.argmax(score_group(group_set, group, model, "l1_norm"))) == DEAD


def test_taylor_matches_a_hand_computation():
    """taylor = sum over samples of |sum over space of a * dL/da| at the consumer's input."""
    model = net_with_a_dead_channel()
    group_set, group = first_group(model)
    data = batches(count=2)
    expected = torch.zeros(8, dtype=torch.float64)
    for images, targets in data:
        hidden = model[:3](images).detach().requires_grad_(True)
        loss = F.cross_entropy(model[3:](hidden), targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, hidden)
        expected += (hidden * grad).detach().sum((2, 3)).abs().sum(0).double()
    prepare_data_criterion(model, "taylor", data)
    assert np.allclose(score_group(group_set, group, model, "taylor"), expected.numpy(), rtol=1e-4, atol=1e-9)


def test_activation_mean_matches_a_hand_computation():
    model = net_with_a_dead_channel()
    group_set, group = first_group(model)
    data = batches(count=2)
    with torch.no_grad():
        hidden = torch.cat([model[:3](images) for images, _ in data])
    expected = hidden.abs().mean((0, 2, 3)).double().numpy()
    prepare_data_criterion(model, "activation_mean", data)
    scores = score_group(group_set, group, model, "activation_mean")
    assert np.allclose(scores, expected / expected.mean(), rtol=1e-5)  # one consumer, divided by its mean


def test_needs_data_goes_stale_after_pruning_and_leaves_the_model_as_it_was():
    model = net_with_a_dead_channel()
    group_set, group = first_group(model)
    with pytest.raises(PruningError, match="needs data.*prepare_data_criterion"):
        score_group(group_set, group, model, "taylor")
    with pytest.raises(PruningError, match="needs training batches"):
        group_scores(group_set, model, "taylor")
    model.train()
    state = copy.deepcopy(model.state_dict())
    prepare_data_criterion(model, "taylor", batches())
    assert model.training, "train/eval mode must be restored"
    assert all(p.grad is None for p in model.parameters()), "taylor must not leave gradients behind"
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "BN statistics must not move"
    model.eval()
    apply_plan(model, group_set, removed_mask(group_set, {group.index: [0, 1]}))
    group_set_after, group_after = first_group(model)
    with pytest.raises(PruningError, match="prepare the criterion again"):
        score_group(group_set_after, group_after, model, "taylor")
    prepare_data_criterion(model, "taylor", batches())
    assert score_group(group_set_after, group_after, model, "taylor").shape == (6,)


def test_registered_and_fed_by_group_scores():
    assert {"taylor", "activation_mean"} <= set(list_criteria())
    model = net_with_a_dead_channel()
    group_set, group = first_group(model)
    scores = group_scores(group_set, model, "activation_mean", iter(batches()), max_batches=2)
    assert set(scores) == {g.index for g in group_set.prunable()}
    assert int(np.argmin(scores[group.index])) == DEAD
    with pytest.raises(PruningError, match="no batches"):
        group_scores(group_set, model, "taylor", iter([]))
