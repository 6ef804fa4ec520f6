"""The one builder of compression configs (the seed's YAML schema) that the tests run.

``compression_config`` returns the config as a dict: pruner ``pruner_1``, the given strategies
(``uniform_strategy()`` by default) and the train section; ``changes`` then sets or deletes
(value None) any key by its dotted path, e.g. ``{"train.batch_size": 16}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers import SEQUENTIAL_MODEL, TINY_MODEL

PRUNER = "pruner_1"


def uniform_strategy(start_epoch: int = 1, target_ratio: float = 0.4, pruned_params: str = ".*", **extra):
    return {
        "class": "UniformPruneStrategy",
        "pruner": PRUNER,
        "start_epoch": start_epoch,
        "target_ratio": target_ratio,
        "pruned_params": pruned_params,
        **extra,
    }


def sensitive_strategy(start_epoch: int = 0, target_ratio: float = 0.5, delta_rate: float = 0.25, **extra):
    return {
        "class": "SensitivePruneStrategy",
        "pruner": PRUNER,
        "start_epoch": start_epoch,
        "target_ratio": target_ratio,
        "delta_rate": delta_rate,
        "pruned_params": r".*\.weight",
        **extra,
    }


def auto_strategy(start_epoch: int = 0, min_ratio: float = 0.4, max_ratio: float = 0.5, **extra):
    return {
        "class": "AutoPruneStrategy",
        "pruner": PRUNER,
        "controller": "sa",
        "start_epoch": start_epoch,
        "min_ratio": min_ratio,
        "max_ratio": max_ratio,
        "pruned_params": r".*\.weight",
        **extra,
    }


def sa_controller(max_iter_number: int = 8, **extra) -> dict:
    return {
        "class": "SAController",
        "init_temperature": 1.0,
        "reduce_rate": 0.8,
        "max_iter_number": max_iter_number,
        **extra,
    }


def compression_config(
    checkpoint: str | Path | None = None,
    *,
    strategies: dict[str, dict] | None = None,
    epochs: int = 1,
    model: str | None = None,
    data: str | None = None,
    round_to: int = 2,
    criterion: str = "l1_norm",
    train: dict[str, Any] | None = None,
    sections: dict[str, dict] | None = None,
    changes: dict[str, Any] | None = None,
) -> dict:
    """A config dict; ``strategies`` maps names to strategy bodies and all of them run, in that order.

    ``model`` and ``data`` go to the train section when given (else the command line names them),
    ``train`` adds to its defaults, ``sections`` adds top-level sections (controllers, distillers).
    """
    strategies = {"uniform": uniform_strategy()} if strategies is None else strategies
    train_section = {"batch_size": 32, "lr": 0.05, "lr_strategy": "cosine_decay", "num_workers": 0}
    train_section.update({k: v for k, v in (("model", model), ("data", data)) if v is not None})
    config = {
        "version": 1.0,
        "pruners": {
            PRUNER: {"class": "StructurePruner", "criterions": {"*": criterion}, "round_to": round_to}
        },
        **(sections or {}),
        "strategies": strategies,
        "compressor": {
            "epoch": epochs,
            "checkpoint_path": None if checkpoint is None else str(checkpoint),
            "strategies": list(strategies),
        },
        "train": {**train_section, **(train or {})},
    }
    for dotted, value in (changes or {}).items():
        set_key(config, dotted, value)
    return config


def sequential_model_config(data: str, checkpoint: str | Path | None, **changes: Any) -> dict:
    """3 epochs of ``sequential_net`` at 32x32 on CPU, pruned by half (round_to 8) at epoch 1, seed key names;
    ``changes`` as in compression_config."""
    strategy = uniform_strategy(start_epoch=1, target_ratio=0.5, pruned_params=r"[0-9]+\.weight")
    return compression_config(
        checkpoint,
        strategies={"uniform_pruning_strategy": strategy},
        epochs=3,
        model=SEQUENTIAL_MODEL,
        data=data,
        # round_to 8: the model's layers are too narrow for the default 16 to reach -50% MACs
        round_to=8,
        train={"input_size": 32, "device": "cpu"},
        changes={"pruners.pruner_1.pruning_axis": {"*": 0}, **changes},
    )


def tiny_run_config(
    path: Path,
    checkpoint: Path,
    *,
    model: str,
    data: str,
    epochs: int = 1,
    start_epoch: int = 0,
    target: float = 0.4,
    pruned: str = ".*",
) -> str:
    """A config file for ``model`` at 16x16 on CPU, pruned uniformly at ``start_epoch``; its path."""
    strategy = uniform_strategy(start_epoch=start_epoch, target_ratio=target, pruned_params=pruned)
    config = compression_config(
        checkpoint,
        strategies={"uniform": strategy},
        epochs=epochs,
        model=model,
        data=data,
        train={"batch_size": 16, "input_size": 16, "device": "cpu"},
    )
    return str(write_config(path, config))


def set_key(config: dict, dotted: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``dotted`` "a.b.c" (creating sections); None deletes the key."""
    *parents, key = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(key, None)
    else:
        node[key] = value


def write_config(path: Path, config: dict) -> Path:
    """``config`` as a YAML file at ``path``."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# The train section of the tiny recipes: tiny_net at 16x16 on CPU, a slice of the data, cheap recovery.
TINY_TRAIN = {
    "input_size": 16,
    "device": "cpu",
    "batch_size": 16,
    "train_limit": 64,
    "val_limit": 32,
    "bn_recalibration_batches": 2,
    "reconstruction_batches": 0,
}


def quantized_recipe(
    checkpoint: Path | None, data: str, *, quantize: dict, epochs: int = 3, sections: dict | None = None
) -> dict:
    """The combined recipe on tiny_net at 16x16 on CPU: uniform pruning (-40% MACs) at epoch 0,
    fine-tuning, and the ``quantize`` strategy (PTQ or QAT) named ``quant``."""
    return compression_config(
        checkpoint,
        strategies={"uniform": uniform_strategy(start_epoch=0), "quant": quantize},
        epochs=epochs,
        model=TINY_MODEL,
        data=data,
        train=TINY_TRAIN,
        sections=sections,
    )
