"""Checking a config's ``pruned_params`` regexes against the model, before anything is trained or written."""

from __future__ import annotations

import re

from torch import nn

from torchslim.config import SlimConfig
from torchslim.config.messages import config_context
from torchslim.graph import matching_params, param_name_sample


def check_pruned_params(config: SlimConfig, model: nn.Module, aliases: dict[str, str]) -> None:
    """A ConfigError at ``strategies.<name>.pruned_params`` when an active strategy's regex
    matches no parameter name (nor seed alias) of ``model``: found before training, not at start_epoch."""
    for strategy in config.active_strategies():
        pattern = getattr(strategy, "pruned_params", None)
        if pattern is None or matching_params(model, re.compile(pattern), aliases):
            continue
        sample = param_name_sample(model, aliases)
        problem = f"{pattern!r} matches no parameter of the model; names look like: {sample}, ..."
        raise config_context(config).error(("strategies", strategy.name, "pruned_params"), problem)
