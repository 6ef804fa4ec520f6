"""SensitivePruneStrategy: per-group ratios chosen from a sensitivity scan, optionally in several steps.

At ``start_epoch`` it scans every selected group on a validation slice (``eval_rate``), reusing
``sensitivities_file`` when it matches, picks ratios that remove ``target_ratio`` of the MACs with
the least predicted loss (``allocation``), and prunes in place. When the run re-estimates BN after
pruning, the scan does too, so the table predicts what pruning really costs.

With ``num_steps`` > 1, step k removes ``target_ratio * k / num_steps`` of the original MACs; the
next step comes when the slice metric stops improving or after its share of the epochs up to
``end_epoch``; the last chance takes all steps left. Step k > 0 keeps its table in
``<file stem>.step<k><suffix>``; without ``sensitivities_file`` the table goes to
``<checkpoint_path>/<name>.sensitivities.json``. Progress is checkpointed state.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from torchslim.config import SensitivePruneConfig, canonical_metric
from torchslim.data import DEFAULT_DATA_SPEC
from torchslim.engine.cached import Batch, evaluate_batches
from torchslim.graph import GroupSet, apply_plan, plan_macs
from torchslim.pruning.counting import channel_counts
from torchslim.pruning.prune import analyze
from torchslim.sensitivity.planning import plan_from_sensitivities, predicted_total_loss
from torchslim.sensitivity.scan import group_scores, scan_sensitivity
from torchslim.sensitivity.table import SensitivityTable, model_fingerprint, open_table, ratios_from_delta

from .base import CompressionContext, Strategy, implements
from .common import pruner_criterion, refuse_distributed, training_batches, validation_slice
from .prune_step import PruneStep, finish_pruning, snapshot

log = logging.getLogger(__name__)

TOLERANCE = 0.015  # of the original MACs
CONVERGED_DELTA = 0.1  # metric points per epoch below which fine-tuning has converged


# ----------------------------------------------------------------------------- the strategy


@implements(SensitivePruneConfig)
class SensitivePruneStrategy(Strategy):
    def __init__(self, name: str, config: Any, slim_config: Any) -> None:
        super().__init__(name, config, slim_config)
        self.pruner = slim_config.pruner_of(config)
        self.total_epochs = slim_config.compressor.epoch
        self.run_dir = slim_config.compressor.checkpoint_path
        self.data_spec = slim_config.train.data or DEFAULT_DATA_SPEC
        self.ratios = ratios_from_delta(config.delta_rate)
        self.metric = canonical_metric(config.metric_name)
        self.progress = sys.stderr.isatty()
        self.steps_done = 0
        self.macs_original: int | None = None
        self.last_step_epoch: int | None = None
        self.history: list[float] = []  # metric on the slice at each epoch end since the last step
        self._batches: list[Batch] | None = None

    @property
    def criterion(self) -> str:
        return pruner_criterion(self.pruner)

    # -- hooks ---------------------------------------------------------------------------------
    def on_epoch_begin(self, context: CompressionContext) -> None:
        if self.steps_done >= self.config.num_steps or context.epoch < self.config.start_epoch:
            return
        if self.steps_done == 0 or self._due(context.epoch):
            refuse_distributed(context, self.name, self.config_class.class_name)
            final = self._is_last_chance(context.epoch)
            self.prune_step(context, self.config.num_steps if final else self.steps_done + 1)

    def on_epoch_end(self, context: CompressionContext) -> None:
        if 0 < self.steps_done < self.config.num_steps:
            batches, _, _ = self._slice(context)
            self.history.append(evaluate_batches(context.model, batches, self.metric))

    # -- scheduling ----------------------------------------------------------------------------
    def _horizon(self) -> int:
        """The last epoch at which a step may happen."""
        last = max(self.total_epochs - 1, self.config.start_epoch)
        end = self.config.end_epoch if self.config.end_epoch is not None else last
        return max(self.config.start_epoch, min(end, last))

    def _is_last_chance(self, epoch: int) -> bool:
        return epoch >= self._horizon()

    def _due(self, epoch: int) -> bool:
        interval = max(1, (self._horizon() - self.config.start_epoch) // self.config.num_steps)
        waited = epoch - (self.last_step_epoch if self.last_step_epoch is not None else epoch)
        converged = len(self.history) >= 2 and self.history[-1] - self.history[-2] < CONVERGED_DELTA
        return self._is_last_chance(epoch) or waited >= interval or converged

    # -- one pruning step ----------------------------------------------------------------------
    def table_path(self, step: int) -> Path | None:
        """Where step ``step`` (0-based) keeps its sensitivity table."""
        if self.config.sensitivities_file:
            path = Path(self.config.sensitivities_file)
        elif self.run_dir:
            path = Path(self.run_dir) / f"{self.name}.sensitivities.json"
        else:
            return None
        return path if step == 0 else path.with_name(f"{path.stem}.step{step}{path.suffix}")

    def _slice(self, context: CompressionContext) -> tuple[list[Batch], str, int]:
        if self._batches is None:
            self._batches, self._description, self._samples = validation_slice(
                context, self.config.eval_rate, self.data_spec
            )
        return self._batches, self._description, self._samples

    def prune_step(self, context: CompressionContext, step: int) -> None:
        """Scan, then prune the model so that step ``step`` of ``num_steps`` is reached."""
        model = context.model
        group_set = analyze(model, context.example_input, self.config.pruned_params, context.aliases)
        scores = group_scores(
            group_set, model, self.criterion, training_batches(context, self.criterion), device=context.device
        )
        path = self.table_path(self.steps_done)
        table = self._scan(context, group_set, scores, path)
        macs_now = plan_macs(group_set, np.zeros(len(group_set.roots), dtype=bool))
        if self.macs_original is None:
            self.macs_original = macs_now
        goal = self.config.target_ratio * step / self.config.num_steps  # of the original MACs
        target_now = 1.0 - (1.0 - goal) * self.macs_original / macs_now
        tolerance = TOLERANCE * self.macs_original / macs_now
        self.steps_done, self.last_step_epoch, self.history = step, context.epoch, []
        if target_now <= tolerance:
            log.info("%s: step %d needs no pruning (already at %.2f%% removed)", self.name, step, 100 * goal)
            return
        chosen = plan_from_sensitivities(
            table,
            group_set,
            scores,
            target_now,
            round_to=self.pruner.round_to,
            tolerance=tolerance,
            allocation=self.config.allocation,
        )
        before, original = channel_counts(model), snapshot(context)
        apply_plan(model, group_set, chosen.plan.mask)
        event = self._event(context, step, chosen, table.base_metric, path)
        plot = Path(self.run_dir) / f"{self.name}.step{step}.channels.png" if self.run_dir else None
        finish_pruning(context, event, plot, before, PruneStep(original, group_set, chosen.plan.mask))
        log.info(
            "%s: step %d removed %.2f%% of the original MACs", self.name, step, 100 * event["flops_reduction"]
        )

    def _scan(
        self, context: CompressionContext, group_set: GroupSet, scores: dict, path: Path | None
    ) -> SensitivityTable:
        """The sensitivity table of the model as it is now (reused from ``path`` when it matches)."""
        batches, description, samples = self._slice(context)
        fresh = SensitivityTable(
            model=context.base_name,
            fingerprint=model_fingerprint(context.model),
            criterion=self.criterion,
            metric=self.metric,
            data=description,
            samples=samples,
            recalibrated=context.after_prune is not None,
        )
        return scan_sensitivity(
            context.model,
            group_set,
            scores,
            batches,
            open_table(path, fresh),
            ratios=self.ratios,
            path=path,
            progress=self.progress,
            after_mask=context.after_prune,
        )

    def _event(
        self, context: CompressionContext, step: int, chosen: Any, base_metric: float, path: Path | None
    ) -> dict[str, Any]:
        plan = chosen.plan
        return {
            "strategy": self.name,
            "class": self.config_class.class_name,
            "epoch": context.epoch,
            "step": step,
            "num_steps": self.config.num_steps,
            "macs_before": plan.macs_before,
            "macs_after": plan.macs_after,
            "macs_original": self.macs_original,
            "flops_reduction": 1.0 - plan.macs_after / self.macs_original,
            "step_reduction": plan.reduction,
            "groups_pruned": sum(1 for r in chosen.ratios.values() if r > 0),
            "ratios": {n: round(r, 4) for n, r in chosen.ratios.items()},
            "predicted_loss": predicted_total_loss(chosen),
            "allocation": self.config.allocation,
            "allocation_level": chosen.level,
            "sensitivities_file": None if path is None else str(path),
            "base_metric": base_metric,
        }

    # -- resumable state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "steps_done": self.steps_done,
            "macs_original": self.macs_original,
            "last_step_epoch": self.last_step_epoch,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_done = int(state.get("steps_done", 0))
        self.macs_original = state.get("macs_original")
        self.last_step_epoch = state.get("last_step_epoch")
        self.history = [float(v) for v in state.get("history", [])]
