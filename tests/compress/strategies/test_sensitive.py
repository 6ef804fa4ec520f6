"""SensitivePruneStrategy: reaches its target, reuses its table, takes data criteria, prunes in steps
across a restart."""

from __future__ import annotations

import copy
import json

import pytest

from tests.helpers.strategies import (
    SENSITIVE,
    context_for,
    reduction,
    strategy_config,
    strategy_of,
    trained_chain,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sensitive_strategy_reaches_the_target_and_reuses_its_table(tmp_path):
    model = trained_chain()
    original = copy.deepcopy(model)
    table = tmp_path / "sens.json"
    config = strategy_config({**SENSITIVE, "sensitivities_file": str(table)}, round_to=1)
    context = context_for(model)
    strategy_of(config).on_epoch_begin(context)
    assert abs(reduction(original, context.model) - 0.5) <= 0.015
    event = context.events[-1]
    assert event["sensitivities_file"] == str(table) and set(event["ratios"]) == set(
        json.loads(table.read_text())["groups"]
    )
    written = table.stat().st_mtime_ns
    again = context_for(copy.deepcopy(original))
    strategy_of(config).on_epoch_begin(again)
    assert table.stat().st_mtime_ns == written, "a matching table is reused, not rescanned"
    assert [p.numel() for p in again.model.parameters()] == [p.numel() for p in context.model.parameters()]


@pytest.mark.parametrize("criterion", ["taylor", "activation_mean"])
def test_sensitive_strategy_with_a_data_criterion(criterion):
    model = trained_chain()
    original = copy.deepcopy(model)
    context = context_for(model)
    strategy_of(
        strategy_config({**SENSITIVE, "target_ratio": 0.3}, criterion=criterion, round_to=1)
    ).on_epoch_begin(context)
    assert abs(reduction(original, context.model) - 0.3) <= 0.015


def test_iterative_sensitive_pruning_in_steps_survives_a_restart(tmp_path):
    model = trained_chain()
    original = copy.deepcopy(model)
    config = strategy_config(
        {**SENSITIVE, "num_steps": 2, "sensitivities_file": str(tmp_path / "sens.json")}, epochs=4, round_to=1
    )
    context = context_for(model)
    strategy = strategy_of(config)
    context.epoch = 0
    strategy.on_epoch_begin(context)
    strategy.on_epoch_end(context)
    assert strategy.steps_done == 1 and abs(reduction(original, context.model) - 0.25) <= 0.015
    state = json.loads(json.dumps(strategy.state_dict()))
    resumed = strategy_of(config)  # the compressor restarts and restores the strategy's state
    resumed.load_state_dict(state)
    for epoch in (1, 2, 3):
        context.epoch = epoch
        resumed.on_epoch_begin(context)
        resumed.on_epoch_end(context)
    assert resumed.steps_done == 2
    assert [e["step"] for e in context.events] == [1, 2] and context.events[1]["epoch"] == 1
    assert abs(reduction(original, context.model) - 0.5) <= 0.015
    assert (tmp_path / "sens.json").is_file() and (tmp_path / "sens.step1.json").is_file()
