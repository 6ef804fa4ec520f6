"""Every name a registry holds works where a user writes it: criteria in a YAML config and on the
``prune`` command line, strategy / controller / pruner / distiller classes in a config."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from tests.helpers import TINY_MODEL
from torchslim.cli import main
from torchslim.compress.compressor import Compressor
from torchslim.compress.controllers import CONTROLLERS, build_controller
from torchslim.compress.strategies import STRATEGIES, build_strategy
from torchslim.config import (
    CONTROLLER_CONFIGS,
    DISTILLER_CONFIGS,
    PRUNER_CONFIGS,
    QUANTIZER_CONFIGS,
    STRATEGY_CONFIGS,
    load_config,
    parse_config,
    quantizer_config,
)
from torchslim.config.classes import class_names
from torchslim.config.distillers import distiller_config
from torchslim.criteria import CRITERIA, data_criterion
from torchslim.errors import ConfigError

TARGET = 0.4


def compress_config(criterion: str, data: str) -> dict:
    """One epoch of the tiny model on the tiny data set, pruned at epoch 0 with ``criterion``."""
    return {
        "version": 1.0,
        "pruners": {"pruner": {"class": "StructurePruner", "criterions": {"*": criterion}, "round_to": 2}},
        "strategies": {
            "uniform": {
                "class": "UniformPruneStrategy",
                "pruner": "pruner",
                "target_ratio": TARGET,
                "pruned_params": ".*",
            }
        },
        "compressor": {"epoch": 1, "checkpoint_path": None, "strategies": ["uniform"]},
        "train": {
            "model": TINY_MODEL,
            "data": data,
            "batch_size": 64,
            "lr": 0.05,
            "num_workers": 0,
            "val_limit": 64,
            "bn_recalibration_batches": 2,
            "reconstruction_batches": 2,
        },
    }


@pytest.mark.parametrize("criterion", CRITERIA.list())
def test_every_registered_criterion_prunes_in_a_compress_run(criterion, tiny_fmnist, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(compress_config(criterion, tiny_fmnist)))
    config = load_config(path)
    assert config.pruners["pruner"].criterions == {"*": criterion}
    summary = Compressor(config, progress=False, log=lambda message: None).run()
    assert summary.epochs_run == [0]
    assert summary.after.macs < summary.before.macs
    (event,) = [e for e in summary.events if e["strategy"] == "uniform"]
    assert event["flops_reduction"] == pytest.approx(TARGET, abs=0.05)


@pytest.mark.parametrize("criterion", CRITERIA.list())
def test_every_registered_criterion_prunes_from_the_command_line(criterion, tiny_fmnist, capsys):
    argv = ["prune", "--model", TINY_MODEL, "--target-flops", str(TARGET), "--round-to", "2"]
    argv += ["--criterion", criterion, "--json"]
    if data_criterion(criterion) is not None:
        argv += [
            "--data",
            tiny_fmnist,
            "--val-limit",
            "64",
            "--bn-batches",
            "2",
            "--reconstruct-batches",
            "2",
        ]
    assert main(argv) == 0, capsys.readouterr().err
    payload = json.loads(capsys.readouterr().out)
    assert payload["macs_after"] < payload["macs_before"]
    assert payload["flops_reduction"] == pytest.approx(TARGET, abs=0.05)


def test_an_unknown_criterion_lists_the_registered_ones():
    data = compress_config("l2", "fashion-mnist")
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = str(info.value)
    assert "pruners.pruner.criterions.*: unknown criterion 'l2'; did you mean 'l2_norm'?" in message
    assert all(name in message for name in CRITERIA.list())


# ----------------------------------------------------------------------------- classes

BASE = {
    "pruners": {"pruner": {"class": "StructurePruner"}},
    "controllers": {"controller": {"class": "SAController"}},
    "distillers": {"distiller": {"class": "SoftLabelDistiller"}},
    "quantizers": {"quantizer": {"class": "PostTrainingQuantizer"}},
    "strategies": {},
    "compressor": {"epoch": 1, "strategies": []},
}
STRATEGY_EXAMPLES = {
    "UniformPruneStrategy": {"pruner": "pruner", "target_ratio": 0.5, "pruned_params": ".*"},
    "SensitivePruneStrategy": {"pruner": "pruner", "pruned_params": ".*"},
    "AutoPruneStrategy": {"pruner": "pruner", "controller": "controller", "pruned_params": ".*"},
    "DistillationStrategy": {"distiller": "distiller"},
    "PostTrainingQuantStrategy": {"quantizer": "quantizer", "int8_model_save_path": "int8"},
    "MKLDNNPostTrainingQuantStrategy": {"int8_model_save_path": "int8"},
    "QuantizationStrategy": {"start_epoch": 0, "int8_model_save_path": "int8"},
}
"""The least config of every strategy class; a newly registered class needs its entry here."""


def with_entry(section: str, entry: dict) -> dict:
    data = copy.deepcopy(BASE)
    data[section]["entry"] = entry
    if section == "strategies":
        data["compressor"]["strategies"] = ["entry"]
    return data


@pytest.mark.parametrize("class_name", class_names(STRATEGY_CONFIGS))
def test_every_registered_strategy_class_parses_and_builds(class_name):
    config = parse_config(with_entry("strategies", {"class": class_name, **STRATEGY_EXAMPLES[class_name]}))
    entry = config.strategies["entry"]
    assert type(entry) is STRATEGY_CONFIGS.get(class_name) and entry.class_name == class_name
    assert parse_config(config.to_dict()) == config
    strategy = build_strategy("entry", entry, config)
    assert type(strategy) is STRATEGIES.get(class_name) and strategy.config is entry


@pytest.mark.parametrize("class_name", class_names(CONTROLLER_CONFIGS))
def test_every_registered_controller_class_parses_and_builds(class_name):
    config = parse_config(with_entry("controllers", {"class": class_name}))
    entry = config.controllers["entry"]
    assert type(entry) is CONTROLLER_CONFIGS.get(class_name)
    controller = build_controller(entry, [(0, 3), (0, 2)], seed=1)
    assert type(controller) is CONTROLLERS.get(class_name)


@pytest.mark.parametrize("class_name", class_names(PRUNER_CONFIGS))
def test_every_registered_pruner_class_parses(class_name):
    config = parse_config(with_entry("pruners", {"class": class_name, "criterions": {"*": "l1_group"}}))
    entry = config.pruners["entry"]
    assert type(entry) is PRUNER_CONFIGS.get(class_name) and entry.criterion_for("conv.weight") == "l1_group"


@pytest.mark.parametrize("class_name", class_names(QUANTIZER_CONFIGS))
def test_every_registered_quantizer_class_parses(class_name):
    config = parse_config(with_entry("quantizers", {"class": class_name, "calibrate_method": "entropy"}))
    entry = quantizer_config(config, "entry")
    assert type(entry) is QUANTIZER_CONFIGS.get(class_name) and entry.calibrate_method == "entropy"


@pytest.mark.parametrize("class_name", class_names(DISTILLER_CONFIGS))
def test_every_registered_distiller_class_parses(class_name):
    config = parse_config(with_entry("distillers", {"class": class_name}))
    assert type(distiller_config(config, "entry")) is DISTILLER_CONFIGS.get(class_name)


def test_implementations_match_the_config_registries():
    assert STRATEGIES.list() == STRATEGY_CONFIGS.list()
    assert CONTROLLERS.list() == CONTROLLER_CONFIGS.list()


@pytest.mark.parametrize(
    ("section", "class_name", "problem"),
    [
        ("strategies", "LightNASStrategy", "neural architecture search is not supported by torchslim"),
        ("strategies", "UniformPruningStrategy", "did you mean 'UniformPruneStrategy'?"),
        ("controllers", "LightNASController", "neural architecture search is not supported"),
        ("pruners", "FilterPruner", "unknown class 'FilterPruner'"),
    ],
)
def test_unsupported_and_unknown_classes_list_the_registered_ones(section, class_name, problem):
    registry = {"strategies": STRATEGY_CONFIGS, "controllers": CONTROLLER_CONFIGS, "pruners": PRUNER_CONFIGS}
    with pytest.raises(ConfigError) as info:
        parse_config(with_entry(section, {"class": class_name}))
    message = str(info.value)
    assert f"{section}.entry.class: " in message and problem in message
    assert f"(supported {section}: {', '.join(class_names(registry[section]))})" in message
