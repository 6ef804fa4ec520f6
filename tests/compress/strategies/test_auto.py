"""AutoPruneStrategy: the search stays in its window and applies the best candidate, spreads over epochs,
and a search killed by SIGKILL goes on at its next candidate. Tiny models and generated data."""

from __future__ import annotations

import copy
import json

import pytest

from tests.helpers import TINY_MODEL
from tests.helpers.configs import auto_strategy, compression_config, sa_controller, write_config
from tests.helpers.processes import assert_killed, run_python
from tests.helpers.strategies import AUTO, context_for, reduction, strategy_config, strategy_of, trained_chain
from torchslim.compress.compressor import Compressor
from torchslim.compress.strategies import (
    AutoPruneStrategy,
)
from torchslim.config import load_config
from torchslim.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- SAController


# ----------------------------------------------------------------------------- AutoPruneStrategy


def test_auto_search_stays_in_the_window_and_applies_the_best(tmp_path):
    model = trained_chain()
    context = context_for(model)
    original = copy.deepcopy(model)
    strategy = strategy_of(strategy_config(AUTO, checkpoint=tmp_path))
    rewards: list = []
    strategy.on_candidate = lambda i, tokens, reward: rewards.append((i, tokens, reward))
    strategy.on_epoch_begin(context)
    assert strategy.done and context.model_changed
    assert [i for i, _, _ in rewards] == list(range(9))  # the initial tokens, then max_iter_number candidates
    assert 0.4 - 1e-9 <= reduction(original, context.model) <= 0.5 + 1e-9
    event = context.events[-1]
    assert event["search"]["best_reward"] == max(r for _, _, r in rewards)
    assert {tuple(t): r for _, t, r in rewards}[tuple(event["tokens"])] == event["search"]["best_reward"]
    json.dumps(strategy.state_dict())
    assert (tmp_path / "s.channels.png").is_file()
    again = strategy_of(strategy_config(AUTO, checkpoint=tmp_path))
    again.load_state_dict(json.loads(json.dumps(strategy.state_dict())))
    again.on_epoch_begin(context)  # a resumed run whose search is done does nothing
    assert again.evaluations == 0 and len(context.events) == 1


# The AUTO search of tests.helpers.strategies in a process of its own, which prints each candidate it
# evaluates and SIGKILLs itself right after candidate 4 (its search state saved, nothing cleaned up).
KILLED_SEARCH = """
import os, signal, sys
import torch
from tests.helpers.strategies import AUTO, context_for, strategy_config, strategy_of, trained_chain

torch.set_num_threads(1)
strategy = strategy_of(strategy_config(AUTO, checkpoint=sys.argv[1]))


def killer(iteration, tokens, reward):
    print(iteration, flush=True)
    if iteration == 4:
        os.kill(os.getpid(), signal.SIGKILL)


strategy.on_candidate = killer
strategy.on_epoch_begin(context_for(trained_chain()))
"""


def test_killed_auto_search_continues_from_its_last_candidate(tmp_path):
    uninterrupted = strategy_of(strategy_config(AUTO))
    uninterrupted.on_epoch_begin(context_for(trained_chain()))

    killed = run_python(KILLED_SEARCH, str(tmp_path))
    assert_killed(killed)
    seen = [int(line) for line in killed.stdout.split()]
    assert seen == [0, 1, 2, 3, 4]
    saved = json.loads((tmp_path / "s.search.json").read_text())
    assert saved["state"]["controller"]["iteration"] == 4
    restarted = strategy_of(strategy_config(AUTO, checkpoint=tmp_path))
    restarted.on_candidate = lambda iteration, tokens, reward: seen.append(iteration)
    context = context_for(trained_chain())
    restarted.on_epoch_begin(context)
    assert seen == list(range(9)), "every candidate evaluated exactly once across the kill"
    assert restarted.evaluations == 4
    assert context.events[-1]["tokens"] == list(uninterrupted.controller.best_tokens)
    assert restarted.controller.best_reward == uninterrupted.controller.best_reward


def test_auto_search_is_spread_over_epochs_until_end_epoch():
    strategy = strategy_of(strategy_config({**AUTO, "end_epoch": 2}, epochs=4, max_iter=6))
    context = context_for(trained_chain())
    per_epoch = []
    for epoch in range(4):
        context.epoch = epoch
        before = strategy.evaluations
        strategy.on_epoch_begin(context)
        per_epoch.append((strategy.evaluations - before, strategy.done))
    assert per_epoch == [(3, False), (2, False), (2, True), (0, True)]  # 1 initial + 2, 2, 2 then applied


def test_auto_init_tokens_and_uniform_range():
    context = context_for(trained_chain())
    with pytest.raises(ConfigError, match="init_tokens has 2 values but .* 4 prunable groups"):
        strategy_of(strategy_config({**AUTO, "init_tokens": [10, 20]})).on_epoch_begin(context)
    strategy = strategy_of(strategy_config({**AUTO, "init_tokens": [30, 30, 30, 30], "uniform_range": 0.2}))
    strategy.on_epoch_begin(context)
    start = strategy.init_tokens
    for (low, high), token in zip(strategy.controller.range_table, start, strict=True):
        assert low <= token <= high
    sizes = [16, 32, 32, 48]
    for (low, high), size, token in zip(strategy.controller.range_table, sizes, start, strict=True):
        assert (high - token) * 4 / size <= 0.2 + 1e-9 and (token - low) * 4 / size <= 0.2 + 1e-9


# ----------------------------------------------------------------------------- SensitivePruneStrategy


# ``torchslim compress`` (through the Compressor) that prints each candidate its search reports and
# SIGKILLs itself after the fifth.
KILLED_COMPRESSOR = """
import os, signal, sys
from torchslim.compress.compressor import Compressor
from torchslim.compress.strategies import AutoPruneStrategy
from torchslim.config import load_config

reported = []


def report(self, iteration, tokens, reward):
    reported.append(iteration)
    print(iteration, flush=True)
    if len(reported) == 5:
        os.kill(os.getpid(), signal.SIGKILL)


AutoPruneStrategy._report = report
Compressor(load_config(sys.argv[1]), progress=False, log=lambda message: None).run()
"""


def test_compressor_resumes_a_killed_search_without_repeating_candidates(tiny_fmnist, tmp_path, monkeypatch):
    """A search spread over epochs is killed in its second epoch; the rerun goes on at the next candidate."""
    strategy = auto_strategy(end_epoch=2, min_ratio=0.3, eval_rate=0.25)
    config = compression_config(
        tmp_path / "run",
        strategies={"auto": strategy},
        epochs=3,
        model=TINY_MODEL,
        data=tiny_fmnist,
        round_to=4,
        sections={"controllers": {"sa": sa_controller(max_iter_number=6)}},
        train={"batch_size": 64, "device": "cpu", "lr": 0.01, "bn_recalibration_batches": 1},
        changes={"compressor.save_eval_model": False, "compressor.save_inference_model": False},
    )
    path = write_config(tmp_path / "auto.yaml", config)
    killed = run_python(KILLED_COMPRESSOR, str(path))
    assert_killed(killed)
    seen = [int(line) for line in killed.stdout.split()]
    assert seen == [0, 1, 2, 3, 4]  # candidate 4 is in epoch 1
    monkeypatch.setattr(
        AutoPruneStrategy, "_report", lambda self, iteration, tokens, reward: seen.append(iteration)
    )
    summary = Compressor(load_config(path), progress=False, log=lambda message: None).run()
    assert summary.resumed_from is not None
    assert seen == list(range(7)), "no candidate evaluated twice, none skipped"
    event = summary.events[0]
    assert event["epoch"] == 2 and event["search"]["candidates"] == 6
    assert 0.3 - 1e-9 <= 1.0 - summary.after.macs / summary.before.macs <= 0.5 + 1e-9
