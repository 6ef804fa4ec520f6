"""The schema: what the seed's five configs parse to, round trips, defaults, torchslim's additions."""

from __future__ import annotations

import copy
import json

import pytest

from tests.helpers import SEED_CONFIGS
from tests.helpers.seed_configs import SEED_DICTS, SEED_NAMES, config_error, mobilenet_v1_seed
from torchslim.config import (
    AutoPruneConfig,
    DistillationConfig,
    QuantizationConfig,
    SAControllerConfig,
    SensitivePruneConfig,
    StructurePrunerConfig,
    UniformPruneConfig,
    canonical_metric,
    load_config,
    loads_config,
    parse_config,
)
from torchslim.criteria import CRITERIA
from torchslim.errors import ConfigError
from torchslim.pruning.planner import DEFAULT_ROUND_TO


def test_all_five_seed_configs_are_present():
    assert SEED_NAMES == [
        "auto_prune.yaml",
        "filter_pruning_sen.yaml",
        "mobilenet_v1.yaml",
        "mobilenet_v2.yaml",
        "resnet34.yaml",
    ]


@pytest.mark.parametrize(
    "name, pattern, epoch, checkpoint",
    [
        ("mobilenet_v1.yaml", ".*_sep_weights", 121, "./checkpoints/mobilenet_v1/"),
        ("mobilenet_v2.yaml", ".*[r|d]_weights", 241, "./checkpoints/"),
        ("resnet34.yaml", ".*branch.*_weights", 121, "./checkpoints/resnet34/"),
    ],
)
def test_uniform_seed_configs(name, pattern, epoch, checkpoint):
    config = load_config(SEED_CONFIGS / name)
    assert config.version == 1.0
    assert config.source == str(SEED_CONFIGS / name)
    (strategy,) = config.active_strategies()
    assert isinstance(strategy, UniformPruneConfig)
    assert strategy.name == "uniform_pruning_strategy"
    assert strategy.class_name == "UniformPruneStrategy"
    assert strategy.target_ratio == 0.5
    assert strategy.start_epoch == 0
    assert strategy.end_epoch is None
    assert strategy.pruned_params == pattern
    assert config.compressor.epoch == epoch
    assert config.compressor.checkpoint_path == checkpoint
    assert config.compressor.eval_epoch == 1
    assert config.compressor.save_eval_model is True
    assert config.compressor.save_inference_model is True
    pruner = config.pruner_of(strategy)
    assert isinstance(pruner, StructurePrunerConfig)
    assert pruner.name == "pruner_1"
    assert pruner.pruning_axis == {"*": 0}
    assert pruner.criterions == {"*": "l1_norm"}
    assert pruner.round_to == DEFAULT_ROUND_TO and pruner.global_ranking is False
    assert config.controllers == {} and config.distillers == {} and config.quantizers == {}
    # no train section in the seed: our defaults (the seed's compress.py defaults)
    assert config.train.lr == 0.1 and config.train.batch_size == 256
    assert config.train.lr_strategy == "piecewise_decay" and config.train.step_epochs == [30, 60, 90]


def test_mobilenet_v1_pattern_matches_pointwise_names_only():
    strategy = load_config(SEED_CONFIGS / "mobilenet_v1.yaml").active_strategies()[0]
    assert strategy.pruned_params_re.match("conv2_1_sep_weights")
    assert not strategy.pruned_params_re.match("conv2_1_dw_weights")


def test_sensitive_seed_config():
    config = load_config(SEED_CONFIGS / "filter_pruning_sen.yaml")
    (strategy,) = config.active_strategies()
    assert isinstance(strategy, SensitivePruneConfig)
    assert strategy.delta_rate == 0.1
    assert strategy.target_ratio == 0.5
    assert strategy.num_steps == 1
    assert strategy.eval_rate == 0.2
    assert strategy.pruned_params == ".*_sep_weights"
    assert strategy.sensitivities_file == "mobilenet_acc_top1_sensitive.data"
    assert strategy.metric_name == "acc_top1"
    assert canonical_metric(strategy.metric_name) == "top1_acc"
    assert config.compressor.epoch == 200


def test_auto_seed_config():
    config = load_config(SEED_CONFIGS / "auto_prune.yaml")
    (strategy,) = config.active_strategies()
    assert isinstance(strategy, AutoPruneConfig)
    assert (strategy.min_ratio, strategy.max_ratio) == (0.48, 0.50)
    assert strategy.end_epoch == 500 and strategy.retrain_epoch == 0
    assert strategy.uniform_range == 0.4
    assert strategy.init_tokens is None
    controller = config.controller_of(strategy)
    assert isinstance(controller, SAControllerConfig)
    assert (controller.reduce_rate, controller.init_temperature, controller.max_iter_number) == (
        0.9,
        100.0,
        300,
    )
    assert config.pruner_of(strategy).name == "pruner_1"
    assert config.compressor.epoch == 600


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_config_round_trips(name):
    config = load_config(SEED_CONFIGS / name)
    as_dict = config.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict  # plain JSON-able data
    assert parse_config(as_dict) == config
    assert loads_config(config.to_yaml()) == config
    # every key the seed wrote comes back with the same value
    for section in ("pruners", "strategies", "controllers"):
        for instance, entry in SEED_DICTS[name].get(section, {}).items():
            for key, value in entry.items():
                assert as_dict[section][instance][key] == value, (section, instance, key)
    for key, value in SEED_DICTS[name]["compressor"].items():
        assert as_dict["compressor"][key] == value


def test_save_writes_a_loadable_file(tmp_path):
    config = load_config(SEED_CONFIGS / "auto_prune.yaml")
    config.save(tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_both_metric_spellings_and_defaults():
    data = copy.deepcopy(SEED_DICTS["filter_pruning_sen.yaml"])
    data["strategies"]["sensitive_pruning_strategy"]["metric_name"] = "top1_acc"
    assert parse_config(data).strategies["sensitive_pruning_strategy"].metric_name == "top1_acc"
    del data["strategies"]["sensitive_pruning_strategy"]["metric_name"]
    del data["strategies"]["sensitive_pruning_strategy"]["eval_rate"]
    strategy = parse_config(data).strategies["sensitive_pruning_strategy"]
    assert strategy.metric_name == "top1_acc" and strategy.eval_rate is None


def test_our_additions_and_train_section():
    data = mobilenet_v1_seed()
    data["pruners"]["pruner_1"].update(round_to=16, global_ranking=True)
    data["pruners"]["pruner_1"]["criterions"] = {"*": "l1_norm", "conv1.*": "FPGM"}
    data["train"] = {
        "batch_size": 64,
        "lr": "1e-3",  # PyYAML reads 1e-3 as a string; we accept numeric strings for numbers
        "lr_strategy": "cosine_decay",
        "step_epochs": [5, 10],
        "total_images": 1281167,
        "device": "cuda:1",
        "train_limit": 100,
    }
    data["compressor"].update(
        checkpoint_path="", save_eval_model=False, prune_infer_model=[["image"], ["out"]]
    )
    config = parse_config(data)
    pruner = config.pruners["pruner_1"]
    assert pruner.round_to == 16 and pruner.global_ranking is True
    assert pruner.criterion_for("conv1_sep_weights") == "FPGM"
    assert pruner.criterion_for("conv2_sep_weights") == "l1_norm"
    assert pruner.axis_for("anything") == 0
    assert config.train.lr == pytest.approx(1e-3)
    assert config.train.lr_strategy == "cosine_decay"
    assert config.train.device == "cuda:1"
    assert config.compressor.checkpoint_path is None  # empty path = no checkpoints, as in the seed
    assert config.compressor.prune_infer_model == [["image"], ["out"]]
    assert parse_config(config.to_dict()) == config


def test_a_criterion_registered_in_the_criteria_registry_is_known_to_configs(monkeypatch):
    data = mobilenet_v1_seed()
    data["pruners"]["pruner_1"]["criterions"] = {"*": "my_criterion"}
    with pytest.raises(ConfigError):
        parse_config(data)
    monkeypatch.setattr(CRITERIA, "_entries", dict(CRITERIA._entries))  # undone after the test
    CRITERIA.register("my_criterion", lambda weight: weight)
    assert parse_config(data).pruners["pruner_1"].criterions == {"*": "my_criterion"}


def test_active_strategies_follow_compressor_order():
    data = mobilenet_v1_seed()
    data["strategies"]["second"] = dict(data["strategies"]["uniform_pruning_strategy"], start_epoch=5)
    data["compressor"]["strategies"] = ["second", "uniform_pruning_strategy"]
    config = parse_config(data)
    assert [s.name for s in config.active_strategies()] == ["second", "uniform_pruning_strategy"]


def test_distillers_quantizers_kept_raw_and_quantization_strategy_parsed():
    data = mobilenet_v1_seed()
    data["distillers"] = {
        "l2": {"class": "L2Distiller", "teacher_feature_map": "t", "distillation_loss_weight": 1}
    }
    data["quantizers"] = {"q": {"class": "QuantizationStrategy", "weight_bits": 8}}
    data["strategies"]["distill"] = {"class": "DistillationStrategy", "distillers": ["l2"], "start_epoch": 0}
    config = parse_config(data)
    assert config.distillers["l2"]["teacher_feature_map"] == "t"
    assert config.quantizers["q"]["weight_bits"] == 8
    assert isinstance(config.strategies["distill"], DistillationConfig)
    assert parse_config(config.to_dict()) == config

    data["strategies"]["quant"] = {"class": "QuantizationStrategy", "start_epoch": 121}
    assert isinstance(parse_config(data).strategies["quant"], QuantizationConfig)
    data["strategies"]["quant"]["weight_bits"] = 4
    error = config_error(data)
    assert "strategies.quant.weight_bits" in str(error) and "only 8 bits are supported" in str(error)


@pytest.mark.parametrize(
    ("key", "value"), [("input_size", 4097), ("num_classes", 100_001), ("input_size", 0)]
)
def test_train_sizes_that_would_exhaust_memory_are_config_errors(key, value):
    data = {"compressor": {"epoch": 1, "strategies": []}, "train": {key: value}}
    with pytest.raises(ConfigError, match=rf"train\.{key}: must be in \[1, "):
        parse_config(data)


def test_global_ranking_takes_per_mac_and_names_the_key_for_anything_else():
    data = mobilenet_v1_seed()
    data["pruners"]["pruner_1"]["global_ranking"] = "per_mac"
    config = parse_config(data)
    assert config.pruners["pruner_1"].global_ranking == "per_mac"
    assert parse_config(config.to_dict()) == config
    data["pruners"]["pruner_1"]["global_ranking"] = "per_flop"
    error = str(config_error(data))
    assert "pruners.pruner_1.global_ranking" in error and "expected true, false or per_mac" in error
