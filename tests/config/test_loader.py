"""Loading configs: ``include`` files, overrides, and (property tests) any input is a valid config or
one ConfigError."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import SEED_CONFIGS
from tests.helpers.seed_configs import SEED_DICTS, SEED_NAMES, SEED_TEXTS, P, U, write_file
from torchslim.config import (
    SlimConfig,
    apply_overrides,
    load_config,
    loads_config,
    parse_config,
    parse_override,
)
from torchslim.errors import ConfigError

# ----------------------------------------------------------------------------- seed configs


# ----------------------------------------------------------------------------- include


def test_include_override_wins_with_relative_paths(tmp_path):
    write_file(
        tmp_path / "base" / "common.yaml",
        SEED_TEXTS["mobilenet_v1.yaml"] + "train:\n    lr: 0.1\n    batch_size: 32\n",
    )
    child = write_file(
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
    write_file(tmp_path / "a.yaml", "compressor: {epoch: 1, eval_epoch: 2}\ntrain: {seed: 1}\n")
    write_file(tmp_path / "sub" / "b.yaml", "include: ../a.yaml\ntrain: {seed: 2, batch_size: 8}\n")
    write_file(tmp_path / "c.yaml", "train: {batch_size: 16}\n")
    top = write_file(tmp_path / "top.yaml", "include: [sub/b.yaml, c.yaml]\ncompressor: {epoch: 5}\n")
    config = load_config(top)
    assert config.compressor.epoch == 5 and config.compressor.eval_epoch == 2
    assert config.train.seed == 2 and config.train.batch_size == 16
    assert "include" not in config.to_dict()


def test_include_from_parse_config_and_loads_config(tmp_path):
    write_file(tmp_path / "base.yaml", SEED_TEXTS["resnet34.yaml"])
    config = parse_config({"include": "base.yaml", "compressor": {"epoch": 2}}, base_dir=tmp_path)
    assert config.compressor.epoch == 2
    assert config.strategies["uniform_pruning_strategy"].pruned_params == ".*branch.*_weights"
    config = loads_config("include: base.yaml\ncompressor: {epoch: 4}\n", base_dir=tmp_path)
    assert config.compressor.epoch == 4


def test_include_cycle_is_an_error(tmp_path):
    write_file(tmp_path / "a.yaml", "include: b.yaml\ncompressor: {epoch: 1}\n")
    write_file(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "a.yaml")
    write_file(tmp_path / "self.yaml", "include: self.yaml\ncompressor: {epoch: 1}\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "self.yaml")


def test_include_missing_file_and_errors_name_the_included_file(tmp_path):
    top = write_file(tmp_path / "top.yaml", "include: [nope.yaml]\ncompressor: {epoch: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    message = str(info.value)
    assert message.startswith(f"{top}: include[0]:") and "nope.yaml" in message and "not found" in message

    write_file(tmp_path / "base.yaml", "compressor:\n  epoch: 1\ntrain:\n  batchsize: 3\n")
    top = write_file(tmp_path / "top2.yaml", "include: base.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    assert str(info.value).startswith(f"{tmp_path / 'base.yaml'}: train.batchsize: unknown key")
    assert info.value.line == 4

    write_file(tmp_path / "broken.yaml", "compressor: [1\n")
    top = write_file(tmp_path / "top3.yaml", "include: broken.yaml\n")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "broken.yaml")) + ": line 2"):
        load_config(top)


# ----------------------------------------------------------------------------- bad configs


# ----------------------------------------------------------------------------- overrides


def test_apply_overrides_sets_values_and_keeps_the_original():
    config = load_config(SEED_CONFIGS / "mobilenet_v1.yaml")
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
    config = load_config(SEED_CONFIGS / "mobilenet_v1.yaml")
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, overrides)
    assert str(info.value).startswith(expected), str(info.value)


def test_parse_override_reads_yaml_values():
    assert parse_override("train.lr=0.01") == ("train.lr", 0.01)
    assert parse_override("compressor.strategies=[a, b]") == ("compressor.strategies", ["a", "b"])
    assert parse_override("compressor.checkpoint_path=") == ("compressor.checkpoint_path", None)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.lr")
    config = load_config(SEED_CONFIGS / "mobilenet_v1.yaml")
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


_MOBILENET_V1 = load_config(SEED_CONFIGS / "mobilenet_v1.yaml")


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
    _check_only_config_errors(
        lambda: apply_overrides(config, overrides), str(SEED_CONFIGS / "mobilenet_v1.yaml")
    )
