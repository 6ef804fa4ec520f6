"""What a config's pruning strategies would do, without training (``--dry-run``)."""

from __future__ import annotations

import copy
import re
from typing import Any

from torchslim.compress.compressor import Compressor
from torchslim.compress.param_check import check_pruned_params
from torchslim.criteria import DEFAULT_CRITERION
from torchslim.graph import matching_params
from torchslim.pruning.prune import prune


def plan_strategies(compressor: Compressor) -> list[dict[str, Any]]:
    """What each pruning strategy would do to the initial model, without training (``--dry-run``)."""
    model, _ = compressor.build_initial_model()
    context = compressor.make_context(model)
    check_pruned_params(compressor.config, model, context.aliases)
    plans = []
    for strategy in compressor.config.active_strategies():
        if not hasattr(strategy, "pruned_params"):
            continue
        pruner = compressor.config.pruner_of(strategy)
        matched = matching_params(model, re.compile(strategy.pruned_params), context.aliases)
        target = getattr(strategy, "target_ratio", None) or strategy.max_ratio
        result = prune(
            copy.deepcopy(model),
            context.example_input,
            target_flops=target,
            criterion=pruner.criterions.get("*", DEFAULT_CRITERION),
            pruned_params=strategy.pruned_params,
            round_to=pruner.round_to,
            global_ranking=pruner.global_ranking,
            aliases=context.aliases,
            inplace=True,
        )
        report = result.report
        plans.append(
            {
                "strategy": strategy.name,
                "class": type(strategy).class_name,
                "start_epoch": strategy.start_epoch,
                "pruned_params": strategy.pruned_params,
                "matched_params": len(matched),
                "matched": matched,
                "groups_prunable": len(result.group_set.prunable()),
                "groups_skipped": report.groups_skipped,
                "target_ratio": target,
                "macs_before": report.macs_before,
                "macs_after": report.macs_after,
                "flops_reduction": report.flops_reduction,
                "channels": report.channels,
            }
        )
    return plans
