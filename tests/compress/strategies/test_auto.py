"""SensitivePruneStrategy, AutoPruneStrategy and SAController: targets reached, iterative steps, resumable
search state, and the seed configs on mobilenet_v1. Tiny models and generated data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchslim.compress.compressor import Compressor
from torchslim.compress.controllers import SAController
from torchslim.compress.strategies import (
    AutoPruneStrategy,
    CompressionContext,
    SensitivePruneStrategy,
    build_strategy,
)
from torchslim.config import apply_overrides, load_config, parse_config
from torchslim.errors import ConfigError, PruningError
from torchslim.pruning.counting import profile_model

SEED_CONFIGS = Path(__file__).parent / "data" / "seed_configs"
TINY_MODEL = f"{Path(__file__).parent / 'tiny_models.py'}:tiny_net"
SIDE = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one thread is several times faster than two fighting ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_data(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class = which of 4 image quadrants is brightest (plus noise): learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (count,), generator=generator)
    images = torch.randn(count, 3, SIDE, SIDE, generator=generator) * 0.5
    half = SIDE // 2
    for i, label in enumerate(labels.tolist()):
        top, left = divmod(label, 2)
        images[i, :, top * half : (top + 1) * half, left * half : (left + 1) * half] += 1.0
    return images, labels


_TRAINED: dict[tuple, dict] = {}


def chain_net(widths=(16, 32, 32, 48), num_classes: int = 4) -> nn.Sequential:
    """conv-BN-ReLU x 4, pool, linear, trained briefly on ``toy_data`` (cached per process)."""
    layers: list[nn.Module] = []
    channels = 3
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    torch.manual_seed(0)
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
    key = (tuple(widths), num_classes)
    if key not in _TRAINED:
        images, labels = toy_data(256, seed=0)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        model.train()
        for step in range(40):
            batch = slice(step % 4 * 64, step % 4 * 64 + 64)
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _TRAINED[key] = copy.deepcopy(model.state_dict())
    model.load_state_dict(_TRAINED[key])
    return model.eval()


def context_for(model: nn.Module, count: int = 96) -> CompressionContext:
    images, labels = toy_data(count, seed=1)
    loader = DataLoader(TensorDataset(images, labels), batch_size=32)
    return CompressionContext(
        model=model,
        base_name="chain",
        base_kwargs={},
        example_input=torch.zeros(1, 3, SIDE, SIDE),
        aliases={},
        train_loader=loader,
        val_loader=loader,
    )


def slim_config(
    strategy: dict,
    *,
    epochs: int = 1,
    checkpoint: Path | None = None,
    criterion: str = "l1_norm",
    max_iter: int = 8,
    round_to: int = 4,
):
    name = "s"
    return parse_config(
        {
            "version": 1.0,
            "pruners": {
                "p": {"class": "StructurePruner", "criterions": {"*": criterion}, "round_to": round_to}
            },
            "controllers": {
                "sa": {
                    "class": "SAController",
                    "init_temperature": 1.0,
                    "reduce_rate": 0.8,
                    "max_iter_number": max_iter,
                }
            },
            "strategies": {
                name: {"pruner": "p", "pruned_params": r".*\.weight", "start_epoch": 0, **strategy}
            },
            "compressor": {
                "epoch": epochs,
                "checkpoint_path": None if checkpoint is None else str(checkpoint),
                "strategies": [name],
            },
            "train": {"seed": 0},
        },
        source="<test>",
    )


def reduction(before: nn.Module, after: nn.Module) -> float:
    return 1.0 - profile_model(after, SIDE).macs / profile_model(before, SIDE).macs


def strategy_of(config) -> AutoPruneStrategy | SensitivePruneStrategy:
    return build_strategy("s", config.strategies["s"], config)


AUTO = {"class": "AutoPruneStrategy", "controller": "sa", "min_ratio": 0.4, "max_ratio": 0.5}
SENSITIVE = {"class": "SensitivePruneStrategy", "target_ratio": 0.5, "delta_rate": 0.25}


# ----------------------------------------------------------------------------- SAController


def quadratic(tokens: list[int]) -> float:
    return -float(sum((t - 7) ** 2 for t in tokens))


def run_controller(controller: SAController, iterations: int, proposals: list) -> None:
    for _ in range(iterations):
        tokens = controller.next_tokens()
        proposals.append(tokens)
        controller.update(tokens, quadratic(tokens))


def make_controller() -> SAController:
    return SAController(
        [(0, 9)] * 4,
        reduce_rate=0.9,
        init_temperature=5.0,
        max_iter_number=150,
        seed=3,
        constrain=lambda t: sum(t) <= 28,
    )


def test_sa_controller_finds_the_optimum_within_the_constraint():
    controller = make_controller()
    controller.reset([0, 0, 0, 0], quadratic([0, 0, 0, 0]))
    proposals: list = []
    run_controller(controller, 150, proposals)
    assert all(sum(t) <= 28 and all(0 <= v <= 9 for v in t) for t in proposals)
    assert controller.best_tokens == [7, 7, 7, 7] and controller.done
    assert controller.temperature == pytest.approx(5.0 * 0.9**150)


def test_sa_controller_state_survives_json_and_continues_identically():
    straight = make_controller()
    straight.reset([1, 2, 3, 4], quadratic([1, 2, 3, 4]))
    expected: list = []
    run_controller(straight, 40, expected)
    first = make_controller()
    first.reset([1, 2, 3, 4], quadratic([1, 2, 3, 4]))
    proposals: list = []
    run_controller(first, 17, proposals)
    state = json.loads(json.dumps(first.state_dict()))
    assert {
        "iteration",
        "temperature",
        "current_tokens",
        "current_reward",
        "best_tokens",
        "best_reward",
        "rng",
    } <= set(state)
    second = make_controller()
    second.load_state_dict(state)
    run_controller(second, 23, proposals)
    assert proposals == expected and second.best_tokens == straight.best_tokens
    other = SAController([(0, 3)] * 4)
    with pytest.raises(PruningError, match="other token ranges"):
        other.load_state_dict(state)


# ----------------------------------------------------------------------------- AutoPruneStrategy


def test_auto_search_stays_in_the_window_and_applies_the_best(tmp_path):
    model = chain_net()
    context = context_for(model)
    original = copy.deepcopy(model)
    strategy = strategy_of(slim_config(AUTO, checkpoint=tmp_path))
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
    again = strategy_of(slim_config(AUTO, checkpoint=tmp_path))
    again.load_state_dict(json.loads(json.dumps(strategy.state_dict())))
    again.on_epoch_begin(context)  # a resumed run whose search is done does nothing
    assert again.evaluations == 0 and len(context.events) == 1


def test_killed_auto_search_continues_from_its_last_candidate(tmp_path):
    uninterrupted = strategy_of(slim_config(AUTO))
    uninterrupted.on_epoch_begin(context_for(chain_net()))

    seen: list[int] = []

    def killer(iteration, tokens, reward):
        seen.append(iteration)
        if iteration == 4:
            raise KeyboardInterrupt

    first = strategy_of(slim_config(AUTO, checkpoint=tmp_path))
    first.on_candidate = killer
    with pytest.raises(KeyboardInterrupt):
        first.on_epoch_begin(context_for(chain_net()))
    saved = json.loads((tmp_path / "s.search.json").read_text())
    assert saved["state"]["controller"]["iteration"] == 4
    restarted = strategy_of(slim_config(AUTO, checkpoint=tmp_path))  # a new process: nothing in memory
    restarted.on_candidate = lambda iteration, tokens, reward: seen.append(iteration)
    context = context_for(chain_net())
    restarted.on_epoch_begin(context)
    assert seen == list(range(9)), "every candidate evaluated exactly once across the kill"
    assert restarted.evaluations == 4
    assert context.events[-1]["tokens"] == list(uninterrupted.controller.best_tokens)
    assert restarted.controller.best_reward == uninterrupted.controller.best_reward


def test_auto_search_is_spread_over_epochs_until_end_epoch():
    strategy = strategy_of(slim_config({**AUTO, "end_epoch": 2}, epochs=4, max_iter=6))
    context = context_for(chain_net())
    per_epoch = []
    for epoch in range(4):
        context.epoch = epoch
        before = strategy.evaluations
        strategy.on_epoch_begin(context)
        per_epoch.append((strategy.evaluations - before, strategy.done))
    assert per_epoch == [(3, False), (2, False), (2, True), (0, True)]  # 1 initial + 2, 2, 2 then applied


def test_auto_init_tokens_and_uniform_range():
    context = context_for(chain_net())
    with pytest.raises(ConfigError, match="init_tokens has 2 values but .* 4 prunable groups"):
        strategy_of(slim_config({**AUTO, "init_tokens": [10, 20]})).on_epoch_begin(context)
    strategy = strategy_of(slim_config({**AUTO, "init_tokens": [30, 30, 30, 30], "uniform_range": 0.2}))
    strategy.on_epoch_begin(context)
    start = strategy.init_tokens
    for (low, high), token in zip(strategy.controller.range_table, start, strict=True):
        assert low <= token <= high
    sizes = [16, 32, 32, 48]
    for (low, high), size, token in zip(strategy.controller.range_table, sizes, start, strict=True):
        assert (high - token) * 4 / size <= 0.2 + 1e-9 and (token - low) * 4 / size <= 0.2 + 1e-9


# ----------------------------------------------------------------------------- SensitivePruneStrategy


def test_sensitive_strategy_reaches_the_target_and_reuses_its_table(tmp_path):
    model = chain_net()
    original = copy.deepcopy(model)
    table = tmp_path / "sens.json"
    config = slim_config({**SENSITIVE, "sensitivities_file": str(table)}, round_to=1)
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
    model = chain_net()
    original = copy.deepcopy(model)
    context = context_for(model)
    strategy_of(
        slim_config({**SENSITIVE, "target_ratio": 0.3}, criterion=criterion, round_to=1)
    ).on_epoch_begin(context)
    assert abs(reduction(original, context.model) - 0.3) <= 0.015


def test_iterative_sensitive_pruning_in_steps_survives_a_restart(tmp_path):
    model = chain_net()
    original = copy.deepcopy(model)
    config = slim_config(
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


# ----------------------------------------------------------------------------- the seed configs on mobilenet_v1


@pytest.mark.parametrize(
    ("file", "overrides", "low", "high"),
    [
        ("filter_pruning_sen.yaml", {"strategies.sensitive_pruning_strategy.delta_rate": 0.3}, 0.485, 0.515),
        ("auto_prune.yaml", {"controllers.sa_controller.max_iter_number": 3}, 0.48, 0.50),
    ],
)
def test_seed_config_reaches_its_target_on_mobilenet_v1(file, overrides, low, high, tiny_fmnist, tmp_path):
    config = load_config(SEED_CONFIGS / file)
    name = config.compressor.strategies[0]
    small = {
        "train.model": "mobilenet_v1",
        "train.data": tiny_fmnist,
        "train.device": "cpu",
        "train.batch_size": 32,
        "train.train_limit": 32,
        "train.val_limit": 32,
        "train.num_workers": 0,
        "train.lr": 0.01,
        "compressor.epoch": 1,
        "compressor.checkpoint_path": None,
        f"strategies.{name}.eval_rate": 0.5,
        **overrides,
    }
    if "sensitivities_file" in vars(config.strategies[name]):
        small[f"strategies.{name}.sensitivities_file"] = str(tmp_path / "mobilenet_acc_top1_sensitive.data")
    summary = Compressor(apply_overrides(config, small), progress=False, log=lambda message: None).run()
    removed = 1.0 - summary.after.macs / summary.before.macs
    assert low <= removed <= high, f"{file}: removed {removed:.2%}"
    assert summary.events and summary.events[0]["strategy"] == name


def test_compressor_resumes_a_killed_search_without_repeating_candidates(tiny_fmnist, tmp_path, monkeypatch):
    """A search spread over epochs is killed in its second epoch; the rerun continues at the next candidate."""
    config = parse_config(
        {
            "version": 1.0,
            "pruners": {"p": {"class": "StructurePruner", "round_to": 4}},
            "controllers": {"sa": {"class": "SAController", "init_temperature": 1.0, "max_iter_number": 6}},
            "strategies": {
                "auto": {
                    **AUTO,
                    "pruner": "p",
                    "pruned_params": r".*\.weight",
                    "start_epoch": 0,
                    "end_epoch": 2,
                    "min_ratio": 0.3,
                    "eval_rate": 0.25,
                }
            },
            "compressor": {
                "epoch": 3,
                "checkpoint_path": str(tmp_path / "run"),
                "save_eval_model": False,
                "save_inference_model": False,
                "strategies": ["auto"],
            },
            "train": {
                "model": TINY_MODEL,
                "data": tiny_fmnist,
                "batch_size": 64,
                "device": "cpu",
                "num_workers": 0,
                "lr": 0.01,
                "bn_recalibration_batches": 1,
            },
        },
        source="<test>",
    )
    seen: list[int] = []

    def report(self, iteration, tokens, reward):
        seen.append(iteration)
        if len(seen) == 5:  # candidate 4, in epoch 1: the process dies
            raise KeyboardInterrupt

    monkeypatch.setattr(AutoPruneStrategy, "_report", report)
    with pytest.raises(KeyboardInterrupt):
        Compressor(config, progress=False, log=lambda message: None).run()
    assert seen == [0, 1, 2, 3, 4]
    summary = Compressor(config, progress=False, log=lambda message: None).run()
    assert summary.resumed_from is not None
    assert seen == list(range(7)), "no candidate evaluated twice, none skipped"
    event = summary.events[0]
    assert event["epoch"] == 2 and event["search"]["candidates"] == 6
    assert 0.3 - 1e-9 <= 1.0 - summary.after.macs / summary.before.macs <= 0.5 + 1e-9
