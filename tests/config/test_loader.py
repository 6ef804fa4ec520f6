"""Config loading and validation: the seed's PaddleSlim 1.x YAML files plus our additions."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchslim.config import (
    KNOWN_CRITERIA,
    AutoPruneConfig,
    DistillationConfig,
    SAControllerConfig,
    SensitivePruneConfig,
    SlimConfig,
    StructurePrunerConfig,
    UniformPruneConfig,
    apply_overrides,
    canonical_metric,
    load_config,
    loads_config,
    parse_config,
    parse_override,
)
from torchslim.errors import ConfigError
from torchslim.pruning.planner import DEFAULT_ROUND_TO

SEED_DIR = Path(__file__).parent / "data" / "seed_configs"
SEED_NAMES = sorted(p.name for p in SEED_DIR.glob("*.yaml"))
SEED_TEXTS = {name: (SEED_DIR / name).read_text() for name in SEED_NAMES}
SEED_DICTS = {name: yaml.safe_load(text) for name, text in SEED_TEXTS.items()}


def mobilenet_v1() -> dict:
    return copy.deepcopy(SEED_DICTS["mobilenet_v1.yaml"])


def config_error(mapping: dict, source: str = "bad.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(mapping, source=source)
    return info.value


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- seed configs


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
    config = load_config(SEED_DIR / name)
    assert config.version == 1.0
    assert config.source == str(SEED_DIR / name)
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
    strategy = load_config(SEED_DIR / "mobilenet_v1.yaml").active_strategies()[0]
    assert strategy.pruned_params_re.match("conv2_1_sep_weights")
    assert not strategy.pruned_params_re.match("conv2_1_dw_weights")


def test_sensitive_seed_config():
    config = load_config(SEED_DIR / "filter_pruning_sen.yaml")
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
    config = load_config(SEED_DIR / "auto_prune.yaml")
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
    config = load_config(SEED_DIR / name)
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
    config = load_config(SEED_DIR / "auto_prune.yaml")
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
    data = mobilenet_v1()
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


def test_known_criteria_can_be_extended():
    data = mobilenet_v1()
    data["pruners"]["pruner_1"]["criterions"] = {"*": "my_criterion"}
    with pytest.raises(ConfigError):
        parse_config(data)
    KNOWN_CRITERIA.add("my_criterion")
    try:
        assert parse_config(data).pruners["pruner_1"].criterions == {"*": "my_criterion"}
    finally:
        KNOWN_CRITERIA.discard("my_criterion")


def test_active_strategies_follow_compressor_order():
    data = mobilenet_v1()
    data["strategies"]["second"] = dict(data["strategies"]["uniform_pruning_strategy"], start_epoch=5)
    data["compressor"]["strategies"] = ["second", "uniform_pruning_strategy"]
    config = parse_config(data)
    assert [s.name for s in config.active_strategies()] == ["second", "uniform_pruning_strategy"]


def test_distillers_quantizers_kept_raw_and_quantization_strategy_rejected():
    data = mobilenet_v1()
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
    error = config_error(data)
    assert "strategies.quant.class" in str(error) and "quantization is not supported" in str(error)


# ----------------------------------------------------------------------------- include


def test_include_override_wins_with_relative_paths(tmp_path):
    write(
        tmp_path / "base" / "common.yaml",
        SEED_TEXTS["mobilenet_v1.yaml"] + "train:\n    lr: 0.1\n    batch_size: 32\n",
    )
    child = write(
        tmp_path / "runs" / "short.yaml",
        "include: ../base/common.yaml\n"
        "strategies:\n    uniform_pruning_strategy:\n        target_ratio: 0.3\n"
        "compressor:\n    epoch: 3\n"
        "train:\n    lr: 0.01\n",
    )
    config = load_config(child)
    strategy = config.strategies["uniform_pruning_strategy"]
    assert strategy.target_ratio == 0.3  # override wins, deep-merged
    assert strategy.pruned_params == ".*_sep_weights"  # kept from the included file
    assert config.compressor.epoch == 3
    assert config.compressor.checkpoint_path == "./checkpoints/mobilenet_v1/"
    assert config.train.lr == 0.01 and config.train.batch_size == 32


def test_include_list_is_recursive_and_ordered(tmp_path):
    write(tmp_path / "a.yaml", "compressor: {epoch: 1, eval_epoch: 2}\ntrain: {seed: 1}\n")
    write(tmp_path / "sub" / "b.yaml", "include: ../a.yaml\ntrain: {seed: 2, batch_size: 8}\n")
    write(tmp_path / "c.yaml", "train: {batch_size: 16}\n")
    top = write(tmp_path / "top.yaml", "include: [sub/b.yaml, c.yaml]\ncompressor: {epoch: 5}\n")
    config = load_config(top)
    assert config.compressor.epoch == 5 and config.compressor.eval_epoch == 2
    assert config.train.seed == 2 and config.train.batch_size == 16
    assert "include" not in config.to_dict()


def test_include_from_parse_config_and_loads_config(tmp_path):
    write(tmp_path / "base.yaml", SEED_TEXTS["resnet34.yaml"])
    config = parse_config({"include": "base.yaml", "compressor": {"epoch": 2}}, base_dir=tmp_path)
    assert config.compressor.epoch == 2
    assert config.strategies["uniform_pruning_strategy"].pruned_params == ".*branch.*_weights"
    config = loads_config("include: base.yaml\ncompressor: {epoch: 4}\n", base_dir=tmp_path)
    assert config.compressor.epoch == 4


def test_include_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "include: b.yaml\ncompressor: {epoch: 1}\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", "include: self.yaml\ncompressor: {epoch: 1}\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "self.yaml")


def test_include_missing_file_and_errors_name_the_included_file(tmp_path):
    top = write(tmp_path / "top.yaml", "include: [nope.yaml]\ncompressor: {epoch: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    message = str(info.value)
    assert message.startswith(f"{top}: include[0]:") and "nope.yaml" in message and "not found" in message

    write(tmp_path / "base.yaml", "compressor:\n  epoch: 1\ntrain:\n  batchsize: 3\n")
    top = write(tmp_path / "top2.yaml", "include: base.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    assert str(info.value).startswith(f"{tmp_path / 'base.yaml'}: train.batchsize: unknown key")
    assert info.value.line == 4

    write(tmp_path / "broken.yaml", "compressor: [1\n")
    top = write(tmp_path / "top3.yaml", "include: broken.yaml\n")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "broken.yaml")) + ": line 2"):
        load_config(top)


# ----------------------------------------------------------------------------- bad configs


def _set(data: dict, dotted_key: str, value) -> dict:
    *parents, last = dotted_key.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def _del(data: dict, dotted_key: str) -> dict:
    *parents, last = dotted_key.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]
    return data


U = "strategies.uniform_pruning_strategy"
P = "pruners.pruner_1"


@pytest.mark.parametrize(
    "edit, key_path, problem",
    [
        # unknown keys, with did-you-mean
        (lambda d: _set(d, f"{U}.target_ration", 0.5), f"{U}.target_ration", "did you mean 'target_ratio'?"),
        (lambda d: _set(d, "compresor", {}), "compresor", "did you mean 'compressor'?"),
        (
            lambda d: _set(d, "compressor.chekpoint_path", "x"),
            "compressor.chekpoint_path",
            "did you mean 'checkpoint_path'?",
        ),
        (lambda d: _set(d, "train", {"num_epochs": 3}), "train.num_epochs", "compressor.epoch"),
        # wrong types
        (
            lambda d: _set(d, "compressor.epoch", "many"),
            "compressor.epoch",
            "expected an integer, got 'many' (str)",
        ),
        (lambda d: _set(d, "compressor.epoch", 1.5), "compressor.epoch", "expected an integer"),
        (
            lambda d: _set(d, "compressor.epoch", True),
            "compressor.epoch",
            "expected an integer, got True (bool)",
        ),
        (
            lambda d: _set(d, f"{U}.target_ratio", "half"),
            f"{U}.target_ratio",
            "expected a number, got 'half'",
        ),
        (
            lambda d: _set(d, "compressor.strategies", "uniform_pruning_strategy"),
            "compressor.strategies",
            "expected a list",
        ),
        (
            lambda d: _set(d, "compressor.save_eval_model", "no"),
            "compressor.save_eval_model",
            "expected true or false",
        ),
        (lambda d: _set(d, f"{P}.pruning_axis", [0]), f"{P}.pruning_axis", "expected a mapping"),
        (lambda d: _set(d, "strategies", ["a"]), "strategies", "expected a mapping"),
        # missing keys and references
        (lambda d: _del(d, f"{U}.pruner"), f"{U}.pruner", "required key is missing"),
        (lambda d: _del(d, f"{U}.pruned_params"), f"{U}.pruned_params", "required key is missing"),
        (lambda d: _del(d, f"{U}.class"), f"{U}.class", "required key is missing"),
        (lambda d: _del(d, "compressor.epoch"), "compressor.epoch", "required key is missing"),
        (lambda d: _del(d, "compressor"), "compressor", "required section is missing"),
        (
            lambda d: _set(d, f"{U}.pruner", "pruner_2"),
            f"{U}.pruner",
            "unknown pruner 'pruner_2'; did you mean 'pruner_1'? (defined pruners: pruner_1)",
        ),
        (lambda d: _del(d, "pruners"), f"{U}.pruner", "no pruners are defined"),
        (
            lambda d: _set(d, "compressor.strategies", ["uniform"]),
            "compressor.strategies[0]",
            "unknown strategy 'uniform'",
        ),
        (
            lambda d: _set(d, "compressor.strategies", ["uniform_pruning_strategy"] * 2),
            "compressor.strategies[1]",
            "listed twice",
        ),
        # values out of range
        (lambda d: _set(d, f"{U}.target_ratio", 0), f"{U}.target_ratio", "must be in (0, 1)"),
        (lambda d: _set(d, f"{U}.target_ratio", 1), f"{U}.target_ratio", "must be in (0, 1)"),
        (lambda d: _set(d, f"{U}.target_ratio", 1.5), f"{U}.target_ratio", "got 1.5"),
        (lambda d: _set(d, f"{U}.target_ratio", float("nan")), f"{U}.target_ratio", "finite"),
        (lambda d: _set(d, f"{U}.start_epoch", -1), f"{U}.start_epoch", "must be >= 0"),
        (
            lambda d: _set(d, f"{U}.end_epoch", 0) and _set(d, f"{U}.start_epoch", 3),
            f"{U}.end_epoch",
            ">= start_epoch",
        ),
        (lambda d: _set(d, "compressor.eval_epoch", 0), "compressor.eval_epoch", "must be >= 1"),
        (lambda d: _set(d, f"{P}.round_to", 0), f"{P}.round_to", "must be >= 1"),
        (lambda d: _set(d, f"{P}.pruning_axis", {"*": 1}), f"{P}.pruning_axis.*", "only axis 0"),
        (
            lambda d: _set(d, "train", {"lr_strategy": "cosine"}),
            "train.lr_strategy",
            "did you mean 'cosine_decay'?",
        ),
        (lambda d: _set(d, "train", {"step_epochs": [30, 20]}), "train.step_epochs", "strictly increasing"),
        (lambda d: _set(d, "train", {"device": "gpu"}), "train.device", "expected 'auto', 'cpu'"),
        (lambda d: _set(d, "version", 2.0), "version", "unsupported version"),
        # regexes, criteria, classes
        (
            lambda d: _set(d, f"{U}.pruned_params", "conv(["),
            f"{U}.pruned_params",
            "invalid regular expression",
        ),
        (
            lambda d: _set(d, f"{P}.criterions", {"conv[": "l1_norm"}),
            f"{P}.criterions['conv[']",
            "invalid regular expression",
        ),
        (
            lambda d: _set(d, f"{P}.criterions", {"*": "l1"}),
            f"{P}.criterions.*",
            "unknown criterion 'l1'; did you mean 'l1_norm'?",
        ),
        (
            lambda d: _set(d, f"{U}.class", "UniformPruningStrategy"),
            f"{U}.class",
            "did you mean 'UniformPruneStrategy'?",
        ),
        (lambda d: _set(d, f"{P}.class", "FilterPruner"), f"{P}.class", "unknown class 'FilterPruner'"),
        (lambda d: _set(d, f"{U}.metric_name", "accuracy"), f"{U}.metric_name", "unknown metric"),
    ],
)
def test_bad_config_names_the_key_path(edit, key_path, problem):
    data = mobilenet_v1()
    edit(data)
    error = config_error(data)
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"bad.yaml: {key_path}: "), message
    assert problem in message, message
    assert error.key_path == key_path


def test_auto_strategy_cross_checks():
    data = copy.deepcopy(SEED_DICTS["auto_prune.yaml"])
    data["strategies"]["auto_pruning_strategy"]["min_ratio"] = 0.6
    assert "min_ratio: must be <= max_ratio (0.5)" in str(config_error(data))
    data = copy.deepcopy(SEED_DICTS["auto_prune.yaml"])
    data["strategies"]["auto_pruning_strategy"]["controller"] = "sa"
    message = str(config_error(data))
    assert "strategies.auto_pruning_strategy.controller: unknown controller 'sa'" in message
    assert "sa_controller" in message


def test_errors_from_files_name_file_and_line(tmp_path):
    path = write(
        tmp_path / "cfg.yaml",
        SEED_TEXTS["mobilenet_v1.yaml"].replace("target_ratio: 0.5", "target_ratio: 1.5"),
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    line = SEED_TEXTS["mobilenet_v1.yaml"].splitlines().index("        target_ratio: 0.5") + 1
    assert str(info.value) == (
        f"{path}: strategies.uniform_pruning_strategy.target_ratio: "
        f"must be in (0, 1) (both ends excluded), got 1.5 (line {line})"
    )
    assert info.value.line == line


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(
        tmp_path / "broken.yaml",
        "version: 1.0\npruners:\n  p: {class: StructurePruner\ncompressor:\n  epoch: 1\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line ") and "invalid YAML" in message
    assert "\n" not in message
    assert info.value.line in (3, 4)


def test_duplicate_keys_are_errors(tmp_path):
    path = write(tmp_path / "dup.yaml", "compressor:\n  epoch: 1\n  epoch: 2\n")
    with pytest.raises(
        ConfigError,
        match=r"dup\.yaml: compressor\.epoch: duplicate key \(first defined on line 2\) \(line 3\)",
    ):
        load_config(path)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("just text", "top level must be a mapping"),
        ("1: x\n", "section names must be strings"),
        ("compressor: {epoch: 2020-13-45}\n", "invalid YAML value"),
        ("compressor: {epoch: 1}\n---\ntrain: {}\n", "invalid YAML"),
    ],
)
def test_bad_files(tmp_path, text, problem):
    path = write(tmp_path / "x.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nope.yaml'}: file not found")):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_parse_config_rejects_non_mapping():
    with pytest.raises(ConfigError, match="<string>: the top level must be a mapping"):
        parse_config(["not", "a", "mapping"])


# ----------------------------------------------------------------------------- overrides


def test_apply_overrides_sets_values_and_keeps_the_original():
    config = load_config(SEED_DIR / "mobilenet_v1.yaml")
    new = apply_overrides(
        config,
        {
            "compressor.epoch": 3,
            "train.lr": 0.01,
            f"{U}.target_ratio": 0.3,
            "compressor.checkpoint_path": None,
            f"{P}.round_to": 4,
        },
    )
    assert new.compressor.epoch == 3 and config.compressor.epoch == 121
    assert new.train.lr == 0.01 and new.strategies["uniform_pruning_strategy"].target_ratio == 0.3
    assert new.compressor.checkpoint_path is None and new.pruners["pruner_1"].round_to == 4
    assert new.source == config.source
    assert apply_overrides(config, {}) == config


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"compressor.epoch": -1}, "<overrides>: compressor.epoch: must be >= 0, got -1"),
        ({"train.lr": "fast"}, "<overrides>: train.lr: expected a number, got 'fast' (str)"),
        ({"train.lrr": 0.1}, "<overrides>: train.lrr: unknown key; did you mean 'lr'?"),
        ({f"{U}.target_ratio": 1}, f"<overrides>: {U}.target_ratio: must be in (0, 1)"),
        ({"compressor.epoch.x": 1}, "<overrides>: compressor.epoch: cannot set 'compressor.epoch.x'"),
        ({"compressor..epoch": 1}, "<overrides>: bad override key"),
        ({f"{U}.pruner": "other"}, f"<overrides>: {U}.pruner: unknown pruner 'other'"),
    ],
)
def test_apply_overrides_validates(overrides, expected):
    config = load_config(SEED_DIR / "mobilenet_v1.yaml")
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, overrides)
    assert str(info.value).startswith(expected), str(info.value)


def test_parse_override_reads_yaml_values():
    assert parse_override("train.lr=0.01") == ("train.lr", 0.01)
    assert parse_override("compressor.strategies=[a, b]") == ("compressor.strategies", ["a", "b"])
    assert parse_override("compressor.checkpoint_path=") == ("compressor.checkpoint_path", None)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.lr")
    config = load_config(SEED_DIR / "mobilenet_v1.yaml")
    key, value = parse_override("compressor.epoch=7")
    assert apply_overrides(config, {key: value}).compressor.epoch == 7


# ----------------------------------------------------------------------------- property tests


def _check_only_config_errors(call, source: str):
    """``call`` either returns a valid, round-tripping config or raises a one-line ConfigError.

    (Errors inside an included file name that file, so ``source`` is only the usual prefix.)
    """
    try:
        result = call()
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message and "\r" not in message, message
        assert re.match(r"^\S.*?: \S", message), message
        return
    assert isinstance(result, SlimConfig)
    assert parse_config(result.to_dict()) == result
    json.dumps(result.to_dict())


_KEY_POOL = sorted(
    {
        key
        for data in SEED_DICTS.values()
        for section in data.values()
        if isinstance(section, dict)
        for key in section
    }
    | {
        "round_to",
        "global_ranking",
        "end_epoch",
        "metric_name",
        "init_tokens",
        "train",
        "include",
        "class",
        "lr",
    }
)
_VALUE_POOL = [
    0,
    1,
    0.5,
    0.0,
    1.0,
    -1,
    8,
    True,
    False,
    None,
    "",
    "pruner_1",
    "sa_controller",
    "l1_norm",
    ".*",
    "(",
    "*",
    "UniformPruneStrategy",
    "SAController",
    "StructurePruner",
    "1e-4",
    [0],
    ["uniform_pruning_strategy"],
    {"*": 0},
    {"*": "l1_norm"},
    {},
    [],
    float("inf"),
    float("nan"),
    10**400,
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(_VALUE_POOL).map(copy.deepcopy)  # the pool holds mutable values
    | st.binary(max_size=4)
    | st.dates()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(_KEY_POOL) | st.integers(), inner, max_size=3)
        | st.tuples(inner)
    ),
    max_leaves=8,
)
keys = st.sampled_from(_KEY_POOL) | st.text(max_size=10) | st.integers() | st.none()


def _containers(node, path=()):
    """Every (path, container) inside a nested structure of dicts and lists."""
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        if isinstance(child, dict | list):
            yield from _containers(child, (*path, key))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SEED_NAMES), data=st.data())
def test_mutated_seed_configs_raise_only_config_errors(name, data):
    config = copy.deepcopy(SEED_DICTS[name])
    for _ in range(data.draw(st.integers(1, 4))):
        containers = list(_containers(config))
        _, node = data.draw(st.sampled_from(containers))
        existing = list(node) if isinstance(node, dict) else list(range(len(node)))
        op = data.draw(st.sampled_from(["delete", "replace", "insert"]))
        if op == "delete" and existing:
            del node[data.draw(st.sampled_from(existing))]
        elif op == "replace" and existing:
            node[data.draw(st.sampled_from(existing))] = data.draw(values)
        elif isinstance(node, dict):
            node[data.draw(keys)] = data.draw(values)
        else:
            node.append(data.draw(values))
    _check_only_config_errors(lambda: parse_config(config, source="mutated.yaml"), "mutated.yaml")


_TOKENS = [
    "version: 1.0",
    "pruners:",
    "strategies:",
    "controllers:",
    "compressor:",
    "train:",
    "include: fuzz.yaml",
    "include: [nope.yaml]",
    "class: StructurePruner",
    "class: UniformPruneStrategy",
    "pruner: pruner_1",
    "pruner_1:",
    "epoch: 3",
    "target_ratio: 0.5",
    "pruned_params: '.*'",
    "strategies: [s]",
    "s:",
    "'*': 0",
    "&a",
    "*a",
    "<<: *a",
    "!!binary",
    "!!python/object:os.system",
    "!!set",
    "1e-4",
    "2020-13-45",
    "{",
    "}",
    "[",
    "]",
    ":",
    "- ",
    ",",
    "'",
    '"',
    "#",
    "?",
    "|",
    ">",
    "---",
    "...",
    "~",
    "\t",
    "\x00",
    "\ufeff",
]


@st.composite
def yaml_texts(draw):
    kind = draw(st.sampled_from(["text", "tokens", "seed"]))
    if kind == "text":
        return draw(st.text(max_size=80))
    if kind == "tokens":
        parts = draw(
            st.lists(st.sampled_from(_TOKENS) | st.sampled_from(["\n", "  ", "    ", " "]), max_size=30)
        )
        return "".join(parts)
    text = SEED_TEXTS[draw(st.sampled_from(SEED_NAMES))]
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 20)))
        text = text[:start] + draw(st.sampled_from(_TOKENS + ["", "\n", " "])) + text[end:]
    return text


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=yaml_texts())
def test_random_yaml_text_raises_only_config_errors(fuzz_dir, text):
    path = fuzz_dir / "fuzz.yaml"
    try:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    except UnicodeError:
        return
    _check_only_config_errors(lambda: load_config(path), str(path))
    _check_only_config_errors(lambda: loads_config(text, base_dir=fuzz_dir), "<string>")


_MOBILENET_V1 = load_config(SEED_DIR / "mobilenet_v1.yaml")


@settings(max_examples=200, deadline=None)
@given(
    overrides=st.dictionaries(
        st.sampled_from(
            [
                "compressor.epoch",
                "train.lr",
                "train.step_epochs",
                f"{U}.target_ratio",
                f"{U}.pruner",
                f"{P}.criterions",
                "compressor.strategies",
                "strategies.x.class",
                "train",
                "version",
                "nope.x",
                "compressor.epoch.x",
            ]
        )
        | st.text(max_size=12)
        | st.integers(),
        values,
        max_size=3,
    )
)
def test_random_overrides_raise_only_config_errors(overrides):
    config = _MOBILENET_V1
    _check_only_config_errors(lambda: apply_overrides(config, overrides), str(SEED_DIR / "mobilenet_v1.yaml"))
