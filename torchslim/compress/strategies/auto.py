"""AutoPruneStrategy: search per-group ratios with a controller, apply the best one found.

One token per selected group: how many ``round_to`` steps of channels it loses. Only tokens whose
removed MACs lie in ``[min_ratio, max_ratio]`` are proposed. A candidate is a pruned copy of the
model (BN re-estimated when the run does, optionally fine-tuned ``retrain_epoch`` epochs) scored on
the validation slice ``eval_rate``. ``init_tokens`` gives each group's starting ratio in percent
(default: the uniform plan in the middle of the window); ``uniform_range`` bounds every group to its
start +/- that ratio.

With ``end_epoch`` the candidates are spread over the epochs up to it and the best is applied there;
without, the whole search runs at ``start_epoch``. The search state is checkpointed, and with a
checkpoint path also written after every candidate to ``<checkpoint_path>/<name>.search.json``, so a
killed search continues from its last candidate when the model's weights are the same.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from torchslim.compress.controllers import SAController, build_controller
from torchslim.config import AutoPruneConfig, canonical_metric
from torchslim.data import DEFAULT_DATA_SPEC
from torchslim.engine import TrainOptions, build_optimizer, train_one_epoch
from torchslim.engine.cached import Batch, evaluate_batches
from torchslim.errors import ConfigError, PruningError
from torchslim.graph import GroupSet, apply_plan
from torchslim.pruning.counting import channel_counts
from torchslim.pruning.plan import Plan, PlanBuilder
from torchslim.pruning.prune import analyze
from torchslim.pruning.search import search_uniform
from torchslim.sensitivity.scan import group_scores
from torchslim.sensitivity.table import model_fingerprint

from .base import CompressionContext, Strategy, implements
from .common import (
    pruner_criterion,
    refuse_distributed,
    training_batches,
    validation_slice,
)
from .prune_step import PruneStep, finish_pruning, snapshot

log = logging.getLogger(__name__)


def keep_options(size: int, round_to: int) -> list[int]:
    """Allowed kept counts of a group, most first: the full size, then multiples of ``round_to``."""
    if size <= round_to:
        return [size]
    below = (size - 1) // round_to * round_to
    return [size, *range(below, round_to - 1, -round_to)]


class TokenSpace:
    """Tokens <-> keep counts <-> plans for one group set, with the removed-MACs constraint."""

    def __init__(self, group_set: GroupSet, scores: dict[int, np.ndarray], round_to: int) -> None:
        self.group_set = group_set
        order = {g: np.argsort(s, kind="stable") for g, s in scores.items()}
        self.builder = PlanBuilder(group_set, order, round_to)
        self.groups = sorted(self.builder.sizes)
        self.options = {g: keep_options(self.builder.sizes[g], self.builder.round_to) for g in self.groups}
        self._reductions: dict[tuple[int, ...], float] = {}

    @property
    def names(self) -> list[str]:
        return [self.group_set.groups[g].name for g in self.groups]

    def keep(self, tokens: list[int]) -> dict[int, int]:
        return {g: self.options[g][t] for g, t in zip(self.groups, tokens, strict=True)}

    def plan(self, tokens: list[int]) -> Plan:
        return self.builder.build(self.keep(tokens))

    def reduction(self, tokens: list[int]) -> float:
        key = tuple(tokens)
        if key not in self._reductions:
            self._reductions[key] = self.plan(tokens).reduction
        return self._reductions[key]

    def ratios(self, tokens: list[int]) -> list[float]:
        return [
            1.0 - self.options[g][t] / self.builder.sizes[g] for g, t in zip(self.groups, tokens, strict=True)
        ]

    def token_for_ratio(self, group: int, ratio: float) -> int:
        """The token whose channel ratio is closest to ``ratio``."""
        size = self.builder.sizes[group]
        return int(np.argmin([abs((1.0 - k / size) - ratio) for k in self.options[group]]))

    def tokens_from_plan(self, plan: Plan) -> list[int]:
        return [self.options[g].index(plan.keep[g]) for g in self.groups]


@implements(AutoPruneConfig)
class AutoPruneStrategy(Strategy):
    def __init__(self, name: str, config: Any, slim_config: Any) -> None:
        super().__init__(name, config, slim_config)
        self.pruner = slim_config.pruner_of(config)
        self.controller_config = slim_config.controller_of(config)
        self.train_config = slim_config.train
        self.total_epochs = slim_config.compressor.epoch
        self.run_dir = slim_config.compressor.checkpoint_path
        self.data_spec = slim_config.train.data or DEFAULT_DATA_SPEC
        self.metric = canonical_metric(config.metric_name)
        self.progress = sys.stderr.isatty()
        self.done = False
        self.controller: SAController | None = None
        self.group_names: list[str] | None = None
        self.init_tokens: list[int] | None = None
        self.initial_reward: float | None = None
        self.evaluations = 0  # candidates evaluated by this process (tests, logs)
        self.on_candidate: Callable[[int, list[int], float], None] | None = None
        self._saved: dict[str, Any] | None = None  # controller state loaded before the controller existed
        self._batches: list[Batch] | None = None
        self._fingerprint: str | None = None

    @property
    def criterion(self) -> str:
        return pruner_criterion(self.pruner)

    @property
    def state_file(self) -> Path | None:
        return Path(self.run_dir) / f"{self.name}.search.json" if self.run_dir else None

    def apply_epoch(self) -> int:
        """The epoch at which the best tokens are applied."""
        start = self.config.start_epoch
        if self.config.end_epoch is None:
            return start
        return max(start, min(self.config.end_epoch, self.total_epochs - 1))

    # -- hooks -----------------------------------------------------------------------------------
    def on_epoch_begin(self, context: CompressionContext) -> None:
        if self.done or context.epoch < self.config.start_epoch:
            return
        refuse_distributed(context, self.name, self.config_class.class_name)
        space = self._prepare(context)
        left = self.controller.max_iter_number - self.controller.iteration
        if context.epoch < self.apply_epoch():
            left = math.ceil(left / (self.apply_epoch() - context.epoch + 1))
        self.search(context, space, left)
        if context.epoch >= self.apply_epoch():
            self.apply_best(context, space)

    # -- set-up ----------------------------------------------------------------------------------
    def _prepare(self, context: CompressionContext) -> TokenSpace:
        model = context.model
        group_set = analyze(model, context.example_input, self.config.pruned_params, context.aliases)
        scores = group_scores(
            group_set, model, self.criterion, training_batches(context, self.criterion), device=context.device
        )
        space = TokenSpace(group_set, scores, self.pruner.round_to)
        if not space.groups:
            raise PruningError(f"{self.name}: pruned_params selects no group that can lose channels")
        if self.group_names is not None and self.group_names != space.names:
            raise PruningError(
                f"{self.name}: the model's prunable groups changed since the search started; "
                "start afresh with another checkpoint path"
            )
        self.group_names = space.names
        if self._batches is None:
            self._batches, _, _ = validation_slice(context, self.config.eval_rate, self.data_spec)
        self._fingerprint = model_fingerprint(model)
        if self.controller is None:
            saved = self._newer_saved_state()
            if saved is not None:  # killed mid-search; never its "done": the pruned model was not saved
                self.load_state_dict({**saved, "done": False})
            if self.init_tokens is None:
                self.init_tokens = self.initial_tokens(space)
            ranges = self._ranges(space, self.init_tokens)
            self.controller = build_controller(self.controller_config, ranges, seed=self.train_config.seed)
            if self._saved is not None:
                self.controller.load_state_dict(self._saved)
        self.controller.constrain = lambda tokens: self._feasible(space, tokens)
        return space

    def _feasible(self, space: TokenSpace, tokens: list[int]) -> bool:
        return self.config.min_ratio - 1e-9 <= space.reduction(tokens) <= self.config.max_ratio + 1e-9

    def initial_tokens(self, space: TokenSpace) -> list[int]:
        """``init_tokens`` (percent of each group's channels) or the uniform plan mid-window."""
        if self.config.init_tokens is not None:
            if len(self.config.init_tokens) != len(space.groups):
                raise ConfigError(
                    f"strategies.{self.name}.init_tokens has {len(self.config.init_tokens)} values but "
                    f"pruned_params selects {len(space.groups)} prunable groups ({', '.join(space.names)})"
                )
            pairs = zip(space.groups, self.config.init_tokens, strict=True)
            tokens = [space.token_for_ratio(g, percent / 100.0) for g, percent in pairs]
        else:
            middle = (self.config.min_ratio + self.config.max_ratio) / 2
            window = (self.config.max_ratio - self.config.min_ratio) / 2
            try:
                plan = search_uniform(space.builder, middle, max(window, 0.005))
            except PruningError:
                plan = search_uniform(space.builder, middle, 0.2)
            tokens = space.tokens_from_plan(plan)
        return self._repair(space, tokens)

    def _ranges(self, space: TokenSpace, start: list[int]) -> list[tuple[int, int]]:
        """Every token's range: all options, or those within ``uniform_range`` of its starting ratio."""
        ranges = []
        start_ratios = space.ratios(start)
        for g, token, ratio in zip(space.groups, start, start_ratios, strict=True):
            if self.config.uniform_range is None:
                ranges.append((0, len(space.options[g]) - 1))
                continue
            size = space.builder.sizes[g]
            inside = [
                i
                for i, kept in enumerate(space.options[g])
                if abs((1.0 - kept / size) - ratio) <= self.config.uniform_range + 1e-9
            ]
            ranges.append((min([*inside, token]), max([*inside, token])))
        return ranges

    def _repair(self, space: TokenSpace, tokens: list[int]) -> list[int]:
        """Greedy single-token moves until the removed MACs are inside [min_ratio, max_ratio]."""
        middle = (self.config.min_ratio + self.config.max_ratio) / 2
        tokens = list(tokens)
        for _ in range(10_000):
            if self._feasible(space, tokens):
                return tokens
            best, best_error = None, abs(space.reduction(tokens) - middle)
            for i, g in enumerate(space.groups):
                for step in (-1, 1):
                    value = tokens[i] + step
                    if 0 <= value < len(space.options[g]):
                        candidate = tokens[:i] + [value] + tokens[i + 1 :]
                        error = abs(space.reduction(candidate) - middle)
                        if error < best_error:
                            best, best_error = candidate, error
            if best is None:
                break
            tokens = best
        raise PruningError(
            f"{self.name}: no per-group ratios remove between {self.config.min_ratio:.0%} and "
            f"{self.config.max_ratio:.0%} of MACs (closest: {space.reduction(tokens):.2%}); widen the window "
            "or use a smaller round_to"
        )

    # -- the search ------------------------------------------------------------------------------
    def evaluate_tokens(self, context: CompressionContext, space: TokenSpace, tokens: list[int]) -> float:
        """The reward of ``tokens``: the metric (percent) of a pruned copy on the validation slice."""
        candidate = copy.deepcopy(context.model)
        apply_plan(candidate, space.group_set, space.plan(tokens).mask)
        if context.after_prune is not None:
            context.after_prune(candidate)
        if self.config.retrain_epoch:
            self._retrain(context, candidate)
        self.evaluations += 1
        return evaluate_batches(candidate, self._batches, self.metric)

    def _retrain(self, context: CompressionContext, model) -> None:
        optimizer = build_optimizer(
            model,
            lr=self.train_config.lr,
            momentum=self.train_config.momentum_rate,
            l2_decay=self.train_config.l2_decay,
        )
        options = TrainOptions(device=context.device, progress=False)
        for epoch in range(self.config.retrain_epoch):
            train_one_epoch(model, context.train_loader, optimizer, options, epoch=epoch)

    def search(self, context: CompressionContext, space: TokenSpace, budget: int) -> None:
        """Evaluate the initial tokens (once) and then up to ``budget`` candidates."""
        controller = self.controller
        if not controller.started:
            self.initial_reward = self.evaluate_tokens(context, space, self.init_tokens)
            controller.reset(self.init_tokens, self.initial_reward)
            self._save_search_state()
            self._report(0, self.init_tokens, self.initial_reward)
        steps = max(0, min(budget, controller.max_iter_number - controller.iteration))
        bar = tqdm(
            total=controller.max_iter_number,
            initial=controller.iteration,
            desc=f"{self.name} search",
            unit="candidate",
            disable=not self.progress,
            file=sys.stderr,
            leave=False,
        )
        with bar:
            for _ in range(steps):
                tokens = controller.next_tokens()
                reward = self.evaluate_tokens(context, space, tokens)
                controller.update(tokens, reward)
                self._save_search_state()
                bar.update(1)
                bar.set_postfix(best=f"{controller.best_reward:.2f}", T=f"{controller.temperature:.3g}")
                self._report(controller.iteration, tokens, reward)

    def _report(self, iteration: int, tokens: list[int], reward: float) -> None:
        if self.on_candidate is not None:
            self.on_candidate(iteration, list(tokens), reward)

    def apply_best(self, context: CompressionContext, space: TokenSpace) -> None:
        controller = self.controller
        tokens = list(controller.best_tokens)
        plan = space.plan(tokens)
        before, original = channel_counts(context.model), snapshot(context)
        apply_plan(context.model, space.group_set, plan.mask)
        self.done = True
        event = {
            "strategy": self.name,
            "class": self.config_class.class_name,
            "epoch": context.epoch,
            "macs_before": plan.macs_before,
            "macs_after": plan.macs_after,
            "flops_reduction": plan.reduction,
            "groups_pruned": sum(1 for g, k in plan.keep.items() if k < space.builder.sizes[g]),
            "ratios": {n: round(r, 4) for n, r in zip(space.names, space.ratios(tokens), strict=True)},
            "tokens": tokens,
            "search": {
                "candidates": controller.iteration,
                "accepted": controller.accepted,
                "metric": self.metric,
                "initial_reward": self.initial_reward,
                "best_reward": controller.best_reward,
            },
        }
        plot = Path(self.run_dir) / f"{self.name}.channels.png" if self.run_dir else None
        finish_pruning(context, event, plot, before, PruneStep(original, space.group_set, plan.mask))
        self._save_search_state()
        log.info(
            "%s: applied the best of %d candidates (%s %.2f), %.2f%% of MACs removed",
            self.name,
            controller.iteration,
            self.metric,
            controller.best_reward,
            100 * plan.reduction,
        )

    # -- resumable state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON data: done, the groups searched, the initial tokens / reward, the controller's state."""
        controller = (
            self.controller.state_dict()
            if self.controller is not None and self.controller.started
            else self._saved
        )
        return {
            "done": self.done,
            "group_names": self.group_names,
            "init_tokens": self.init_tokens,
            "initial_reward": self.initial_reward,
            "controller": controller,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state.get("done", False))
        self.group_names = state.get("group_names")
        self.init_tokens = state.get("init_tokens")
        self.initial_reward = state.get("initial_reward")
        self._saved = state.get("controller")
        if self._saved is not None and self.controller is not None:
            self.controller.load_state_dict(self._saved)

    def _save_search_state(self) -> None:
        """Write the search state next to the checkpoints after every candidate (atomically)."""
        path = self.state_file
        if path is None:
            return
        payload = {"fingerprint": self._fingerprint, "state": self.state_dict()}
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(payload) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    def _newer_saved_state(self) -> dict[str, Any] | None:
        """The side file's state when it is further along than ours and was written for these very weights."""
        path = self.state_file
        if path is None or not path.exists():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        state = payload.get("state") or {}
        saved = state.get("controller")
        if payload.get("fingerprint") != self._fingerprint or not saved:
            return None
        if state.get("group_names") != self.group_names:
            return None
        ours = self._saved["iteration"] if self._saved else -1
        if int(saved["iteration"]) <= ours:
            return None
        log.info("%s: continuing the search at candidate %d from %s", self.name, saved["iteration"], path)
        return state
