"""The default criterion is one constant, and every entry point that picks a criterion for the user
uses it: the API, ``torchslim prune``, ``torchslim sensitivity``, a pruner config without
``criterions``, the compressor's dry run and the demo."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from torchslim.cli import demo_cmd
from torchslim.cli.main import build_parser
from torchslim.config.classes import StructurePrunerConfig
from torchslim.criteria import CRITERIA, DEFAULT_CRITERION, data_criterion
from torchslim.pruning.prune import prune


def _parsed(argv: list[str]):
    return build_parser().parse_args(argv)


def test_the_default_is_a_registered_criterion():
    assert DEFAULT_CRITERION in CRITERIA


def test_every_entry_point_defaults_to_it():
    assert inspect.signature(prune).parameters["criterion"].default == DEFAULT_CRITERION
    prune_args = _parsed(["prune", "--model", "m", "--target-flops", "0.5", "--output", "o"])
    assert prune_args.criterion == DEFAULT_CRITERION
    assert _parsed(["sensitivity", "--model", "m"]).criterion == DEFAULT_CRITERION
    assert StructurePrunerConfig().criterions == {"*": DEFAULT_CRITERION}
    demo = demo_cmd._config(demo_cmd.DemoSettings(), "pruned", 1, {}, None)
    assert demo["pruners"]["pruner_1"]["criterions"] == {"*": DEFAULT_CRITERION}


def test_the_api_default_prunes_without_data():
    """``prune(model, x, target_flops=...)`` with no criterion must work as documented: with no batches
    given, the default cannot be a data-driven criterion."""
    assert data_criterion(DEFAULT_CRITERION) is None
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(1, 3, 8, 8))
    result = prune(model, torch.randn(1, 3, 8, 8), target_flops=0.3, round_to=1, verify=True)
    assert result.report.verified and result.report.flops_reduction > 0.25
