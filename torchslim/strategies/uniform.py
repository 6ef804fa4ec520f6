"""UniformPruneStrategy: at its start epoch, remove one ratio of channels from every selected group.

The ratio is searched so that MACs drop by ``target_ratio`` (within 1%), with
channel counts aligned to the pruner's ``round_to``. It prunes once: the fact
that it has pruned is part of its checkpointed state, so a resumed run never
prunes twice (the resumed model is already the pruned architecture).
"""

from __future__ import annotations

import logging
from typing import Any

from torchslim.criteria import prepare_data_criterion
from torchslim.latency import prune_as_configured
from torchslim.plots import channel_counts
from torchslim.pruner import analyze, plan_for_target, rank_units

from .base import CompressionContext, Strategy
from .prune_step import PruneStep, finish_pruning, snapshot
from .sensitive import pruner_criterion, refuse_distributed, training_batches

log = logging.getLogger(__name__)


class UniformPruneStrategy(Strategy):
    def __init__(self, name: str, config: Any, pruner: Any) -> None:
        super().__init__(name, config)
        self.pruner = pruner
        self.done = False

    @property
    def criterion(self) -> str:
        return pruner_criterion(self.pruner)

    def prepare_criterion(self, context: CompressionContext) -> None:
        """Data-driven criteria (taylor, activation_mean) score from a few training batches first."""
        batches = training_batches(context, self.criterion)
        if batches is not None:
            prepare_data_criterion(context.model, self.criterion, batches, device=context.device)

    def on_compression_begin(self, context: CompressionContext) -> None:
        """Plan once on the initial model, so a bad regex or an unreachable target fails before training."""
        if not self.done:
            if getattr(self.pruner, "align", "round_to") == "latency" or getattr(
                self.config, "latency_target", None
            ):
                # Latency-aware plans come from timings (layer table, whole-model profiles) each rank would
                # take on its own: the ranks would prune to different architectures.
                refuse_distributed(
                    context, self.name, "latency-aware pruning (align: latency / latency_target)"
                )
            self.prepare_criterion(context)
            group_set = analyze(
                context.model, context.example_input, self.config.pruned_params, context.aliases
            )
            plan_for_target(
                group_set,
                rank_units(group_set, context.model, self.criterion),
                self.config.target_ratio,
                self.pruner.round_to,
                self.pruner.global_ranking,
            )

    def on_epoch_begin(self, context: CompressionContext) -> None:
        if self.done or context.epoch < self.config.start_epoch:
            return
        self.prepare_criterion(context)
        before, original = channel_counts(context.model), snapshot(context)
        # plain prune(), or latency-aware pruning when the pruner says align: latency / a latency_target is set
        result = prune_as_configured(
            context.model,
            context.example_input,
            target_flops=self.config.target_ratio,
            pruner=self.pruner,
            strategy=self.config,
            criterion=self.criterion,
            aliases=context.aliases,
            inplace=True,
            score=self.latency_plan_score(context),
        )
        self.done = True
        report = result.report
        event = {
            "strategy": self.name,
            "epoch": context.epoch,
            "macs_before": report.macs_before,
            "macs_after": report.macs_after,
            "params_before": report.params_before,
            "params_after": report.params_after,
            "flops_reduction": report.flops_reduction,
            "groups_pruned": report.groups_pruned,
            "seconds": report.seconds,
        }
        calibration = getattr(getattr(result, "latency", None), "calibration", None)
        if calibration:  # which measured plan a latency-aware prune kept, and why
            keys = ("chosen", "chosen_by", "measured_speedup", "scores", "error")
            event["latency_plan"] = {key: calibration[key] for key in keys if key in calibration}
        finish_pruning(context, event, None, before, PruneStep(original, result.group_set, result.plan.mask))

    def latency_plan_score(self, context: CompressionContext):
        """Top-1 on the first validation images after the run's BN re-estimation, for latency-aware
        plans to weigh accuracy (:func:`torchslim.latency_calibration.choose_by_score`); None when
        the pruner is not latency-aware on ONNX Runtime (the runtime whose plans are profiled), has no
        speed slack, or the run has no validation data."""
        if getattr(self.pruner, "align", "round_to") != "latency" or context.val_loader is None:
            return None
        if getattr(self.pruner, "runtime", "onnxruntime") != "onnxruntime":  # no calibration: one plan
            return None
        if getattr(self.pruner, "latency_speed_slack", 0.0) <= 0:
            return None
        from torchslim.latency_calibration import SCORE_SAMPLES
        from torchslim.sensitivity import cache_batches, top1_score

        return top1_score(
            cache_batches(context.val_loader, SCORE_SAMPLES, context.device), context.after_prune
        )

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state.get("done", False))
