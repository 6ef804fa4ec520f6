"""Bad configs: one ConfigError that names the file, the key path, the line, and what is wrong."""

from __future__ import annotations

import copy
import re

import pytest

from tests.helpers.seed_configs import (
    SEED_DICTS,
    SEED_TEXTS,
    P,
    U,
    config_error,
    mobilenet_v1_seed,
    write_file,
)
from torchslim.config import (
    load_config,
    parse_config,
)
from torchslim.errors import ConfigError


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
    data = mobilenet_v1_seed()
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
    path = write_file(
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
    path = write_file(
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
    path = write_file(tmp_path / "dup.yaml", "compressor:\n  epoch: 1\n  epoch: 2\n")
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
    path = write_file(tmp_path / "x.yaml", text)
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
