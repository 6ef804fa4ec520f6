"""Refusals a user can act on: kept groups aggregated by what keeps them, in the error and in
``prune --explain``."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import TINY_MODEL
from tests.helpers.cli import run_main
from tests.helpers.timm_like import GhostNet
from torchslim.errors import PruningError
from torchslim.pruning.explain import blocking_reason, explain_groups
from torchslim.pruning.prune import analyze, prune

X = torch.randn(1, 3, 16, 16)


def test_blocked_groups_are_aggregated_by_reason_and_module_class():
    explanation = explain_groups(analyze(GhostNet(keep=30).eval(), X), round_to=1)
    top = explanation.blockers[0]
    assert (top.owner, top.reason, top.groups) == ("Ghost", "fixed slice of channels", 3)
    assert top.channels == 3 * 16 and 0.5 < top.macs_share <= 1.0
    assert explanation.prunable == 1 and explanation.narrow == 0  # the stem alone
    assert 0.0 < explanation.most_removable < explanation.prunable_macs_share < 0.5
    assert "Ghost: fixed slice of channels: 3 groups" in explanation.summary()


def test_an_unreachable_target_names_the_blocking_ops():
    with pytest.raises(PruningError) as error:
        prune(GhostNet(keep=30).eval(), X, target_flops=0.5, round_to=1)
    message = str(error.value)
    assert "unreachable" in message and "blocked by Ghost: fixed slice of channels: 3 groups" in message
    assert "\n" not in message


def test_no_prunable_group_says_why():
    with pytest.raises(PruningError, match=r"no prunable group.*not selected by pruned_params: \d+ groups"):
        prune(GhostNet().eval(), X, target_flops=0.3, pruned_params=r"head\.fc\.weight")


def test_narrow_groups_are_named_with_the_round_to_that_keeps_them():
    explanation = explain_groups(analyze(GhostNet().eval(), X), round_to=16)
    assert explanation.narrow == explanation.prunable > 0  # every group is 16 wide: none can shrink
    assert explanation.most_removable == 0.0
    assert f"{explanation.narrow} prunable groups are no wider than round_to=16" in explanation.summary()


@pytest.mark.parametrize(
    "reason, expected",
    [
        ("unsupported op layer_norm at node layer_norm_4", ("unsupported op layer_norm", "LN")),
        ("unsupported layer Odd (blocks.3.odd)", ("unsupported layer Odd", "Block")),
        ("grouped conv blocks.1.conv (groups=4) is kept whole", ("grouped conv kept whole", "Block")),
        ("not selected by pruned_params", ("not selected by pruned_params", "")),
    ],
)
def test_reasons_lose_their_names_and_gain_their_module(reason, expected):
    owners = {"layer_norm_4": "LN", "blocks.3.odd": "Block", "blocks.1.conv": "Block"}
    assert blocking_reason(reason, owners) == expected


def test_prune_explain_prints_without_pruning(capsys, tmp_path):
    argv = ["prune", "--model", TINY_MODEL, "--input-size", "16", "--explain", "--round-to", "2"]
    code, out, err = run_main(capsys, [*argv, "--json"])
    assert code == 0, err
    payload = json.loads(out)
    assert payload["prunable"] >= 2 and 0.3 < payload["most_removable"] < 1.0
    assert any("model output" in b["reason"] for b in payload["blockers"])
    code, out, _ = run_main(capsys, argv)
    assert code == 0 and "groups kept whole" in out and "round_to=2" in out
    code, _, err = run_main(capsys, ["prune", "--model", TINY_MODEL])
    assert code == 2 and "--target-flops is required" in err
