"""A harness for strategy tests: a small trained chain of convs, its compression context, and a config
around one strategy (named "s")."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.configs import auto_strategy, compression_config, sa_controller, sensitive_strategy
from tests.helpers.models import conv_chain
from torchslim.compress.strategies import CompressionContext, Strategy, build_strategy
from torchslim.config import SlimConfig, parse_config
from torchslim.pruning.counting import profile_model

SIDE = 8
AUTO = auto_strategy()
SENSITIVE = sensitive_strategy()


def quadrant_data(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def trained_chain(widths=(16, 32, 32, 48), num_classes: int = 4) -> nn.Sequential:
    """``conv_chain`` seeded and trained briefly on ``quadrant_data``: the same weights in every process
    (trained once per process)."""
    torch.manual_seed(0)
    model = conv_chain(widths, num_classes)
    key = (tuple(widths), num_classes)
    if key not in _TRAINED:
        images, labels = quadrant_data(256, seed=0)
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
    """A context whose training and validation data are the same ``count`` quadrant images."""
    images, labels = quadrant_data(count, seed=1)
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


def strategy_config(
    strategy: dict,
    *,
    epochs: int = 1,
    checkpoint: Path | None = None,
    criterion: str = "l1_norm",
    max_iter: int = 8,
    round_to: int = 4,
) -> SlimConfig:
    """A parsed config that runs ``strategy`` as "s", with SA controller "sa" of ``max_iter`` candidates."""
    config = compression_config(
        checkpoint,
        strategies={"s": strategy},
        epochs=epochs,
        round_to=round_to,
        criterion=criterion,
        train={"seed": 0},
        sections={"controllers": {"sa": sa_controller(max_iter)}},
    )
    return parse_config(config, source="<test>")


def reduction(before: nn.Module, after: nn.Module) -> float:
    """The fraction of MACs ``after`` removed from ``before``."""
    return 1.0 - profile_model(after, SIDE).macs / profile_model(before, SIDE).macs


def strategy_of(config: SlimConfig) -> Strategy:
    return build_strategy("s", config.strategies["s"], config)
