"""UniformPruneStrategy: at its start epoch, remove one ratio of channels from every selected group.

The ratio is searched so that MACs drop by ``target_ratio``, counts aligned to the pruner's
``round_to``. It prunes once; that it has pruned is checkpointed state, so a resumed run
(whose model is already pruned) never prunes twice.
"""

from __future__ import annotations

import logging
from typing import Any

from torchslim.config import UniformPruneConfig
from torchslim.criteria import prepare_data_criterion
from torchslim.engine.cached import cache_batches, top1_score
from torchslim.latency.calibration import SCORE_SAMPLES
from torchslim.latency.planner import LatencyOptions, LatencyPlanner
from torchslim.pruning import analyze, channel_counts, prune, rank_units
from torchslim.pruning.planner import plan_for_target

from .base import CompressionContext, Strategy, implements
from .common import pruner_criterion, refuse_distributed, training_batches
from .prune_step import PruneStep, finish_pruning, snapshot

log = logging.getLogger(__name__)


@implements(UniformPruneConfig)
class UniformPruneStrategy(Strategy):
    def __init__(self, name: str, config: Any, slim_config: Any) -> None:
        super().__init__(name, config, slim_config)
        self.pruner = slim_config.pruner_of(config)
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
            if self.latency_aware:
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
                bool(self.pruner.global_ranking),
                per_mac=self.pruner.global_ranking == "per_mac",
            )

    def on_epoch_begin(self, context: CompressionContext) -> None:
        if self.done or context.epoch < self.config.start_epoch:
            return
        self.prepare_criterion(context)
        before, original = channel_counts(context.model), snapshot(context)
        result = prune(
            context.model,
            context.example_input,
            target_flops=self.config.target_ratio,
            criterion=self.criterion,
            pruned_params=self.config.pruned_params,
            round_to=self.pruner.round_to,
            global_ranking=self.pruner.global_ranking,
            aliases=context.aliases,
            inplace=True,
            planner=self.latency_planner(context) if self.latency_aware else None,
        )
        self.done = True
        report = result.report
        event = {"strategy": self.name, "epoch": context.epoch, **report.totals()}
        calibration = getattr(result.plan_info, "calibration", None)
        if calibration:  # which measured plan a latency-aware prune kept, and why
            keys = ("chosen", "chosen_by", "measured_speedup", "scores", "error")
            event["latency_plan"] = {key: calibration[key] for key in keys if key in calibration}
        finish_pruning(context, event, None, before, PruneStep(original, result.group_set, result.plan.mask))

    @property
    def latency_aware(self) -> bool:
        """Whether the pruner says ``align: latency`` or the strategy sets a ``latency_target``."""
        return self.pruner.align == "latency" or self.config.latency_target is not None

    def latency_planner(self, context: CompressionContext) -> LatencyPlanner:
        """The pruner's runtime and speed slack; on ONNX Runtime (whose plans are profiled) in a run
        with validation data, plans are scored by top-1 after the run's BN re-estimation."""
        options = LatencyOptions(runtime=self.pruner.runtime, speed_slack=self.pruner.latency_speed_slack)
        score = None
        profiled = self.pruner.align == "latency" and self.pruner.runtime == "onnxruntime"
        if profiled and context.val_loader is not None and options.speed_slack > 0:
            batches = cache_batches(context.val_loader, SCORE_SAMPLES, context.device)
            score = top1_score(batches, context.after_prune)
        return LatencyPlanner(options, latency_target=self.config.latency_target, score=score)

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state.get("done", False))
