"""Weight criteria: each removes the channels it scores lowest; on crafted filters they disagree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.models import Head, calibrate
from tests.helpers.oracle import assert_oracle, group_of, kept_rows
from torchslim.errors import PruningError
from torchslim.pruning.prune import prune


class CriteriaNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.head = Head(8)

    def forward(self, x):
        return self.head(F.relu(self.conv2(F.relu(self.bn1(self.conv1(x))))))


# |scale| lowest for channels 0-3: neither the spiky (even) nor the flat (odd) filters.
BN_SCALES = [0.1, -0.2, 0.3, 0.15, -0.8, 0.9, 0.7, -0.6]


def criteria_net() -> CriteriaNet:
    """conv1's 8 filters: spiky ones (one large weight) and flat ones (all weights small).

    L1 ranks the spiky filters (0, 2, 4, 6) lowest, L2 the flat ones (1, 3, 5, 7); the BN scales
    rank a third set lowest (0, 1, 2, 3), so each of the three criteria removes other channels.
    """
    torch.manual_seed(0)
    model = CriteriaNet()
    signs = torch.where(torch.rand(8, 27) > 0.5, 1.0, -1.0)
    weight = torch.zeros(8, 27)
    spiky = {0: 1.0, 2: 1.2, 4: 1.4, 6: 1.6}  # l1 = l2 = height
    flat = {1: 0.06, 3: 0.07, 5: 0.08, 7: 0.09}  # l1 = 27 s (1.6 .. 2.4), l2 = 5.2 s (0.3 .. 0.5)
    for i, height in spiky.items():
        weight[i, i] = height
    for i, level in flat.items():
        weight[i] = level
    with torch.no_grad():
        model.conv1.weight.copy_((weight * signs).view(8, 3, 3, 3))
        model.bn1.weight.copy_(torch.tensor(BN_SCALES))
        model.bn1.bias.copy_(torch.linspace(-0.1, 0.1, 8))
    return calibrate(model, (4, 3, 16, 16))


def fpgm_scores(weight: torch.Tensor) -> np.ndarray:
    flat = weight.detach().reshape(len(weight), -1).double().numpy()
    return np.array([sum(np.linalg.norm(a - b) for b in flat) for a in flat])


def group_l1_scores(model: CriteriaNet) -> np.ndarray:
    """Every weight a conv1 channel owns (filter, BN scale, conv2's input slice), each part over its mean."""
    parts = [
        model.conv1.weight.detach().reshape(8, -1).abs().sum(1),
        model.bn1.weight.detach().abs(),
        model.conv2.weight.detach().transpose(0, 1).reshape(8, -1).abs().sum(1),
    ]
    return sum((p / p.mean()).double().numpy() for p in parts)


@pytest.mark.parametrize("criterion", ["l1_norm", "l2_norm", "fpgm", "bn_scale", "l1_group"])
def test_criteria_remove_the_lowest_scored_channels(criterion):
    model = criteria_net()
    weight = model.conv1.weight.detach().reshape(8, -1)
    scores = {
        "l1_norm": weight.abs().sum(1).numpy(),
        "l2_norm": weight.norm(dim=1).numpy(),
        "fpgm": fpgm_scores(model.conv1.weight),
        "bn_scale": model.bn1.weight.detach().abs().numpy(),
        "l1_group": group_l1_scores(model),
    }[criterion]
    order = np.argsort(scores)
    assert scores[order[4]] - scores[order[3]] > 1e-3  # no tie at the cut
    x = torch.randn(2, 3, 16, 16)
    result = prune(
        model, x, target_flops=0.5, criterion=criterion, pruned_params=r"conv1\.weight", round_to=1
    )
    assert result.plan.keep[group_of(result, "conv1").index] == 4
    kept = kept_rows(model.conv1.weight, result.model.conv1.weight)
    assert sorted(kept) == sorted(order[4:].tolist())
    assert result.model.conv2.out_channels == 8  # not selected
    assert_oracle(model, result, x)


def test_criteria_disagree_on_the_crafted_filters():
    model = criteria_net()
    x = torch.randn(2, 3, 16, 16)
    removed = {}
    for criterion in ("l1_norm", "l2_norm", "bn_scale"):
        result = prune(
            model, x, target_flops=0.5, criterion=criterion, pruned_params=r"conv1\.weight", round_to=1
        )
        removed[criterion] = sorted(
            set(range(8)) - set(kept_rows(model.conv1.weight, result.model.conv1.weight))
        )
    assert removed["l1_norm"] == [0, 2, 4, 6]  # the spiky filters
    assert removed["l2_norm"] == [1, 3, 5, 7]  # the flat filters
    assert removed["bn_scale"] == [0, 1, 2, 3]  # the smallest |BN scale|, whatever the filters
    assert len({tuple(r) for r in removed.values()}) == 3


def test_unknown_criterion_is_a_user_error():
    with pytest.raises(PruningError, match="unknown criterion 'nope'; known: .*bn_scale.*l1_norm"):
        prune(criteria_net(), torch.randn(1, 3, 16, 16), target_flops=0.5, criterion="nope")
