"""The optimizer and LR schedule of a compression run, and their rebuild after pruning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from torchslim.config import TrainConfig
from torchslim.engine import build_lr_scheduler, build_optimizer
from torchslim.errors import CheckpointError


class Optimization:
    """SGD over the model (plus the strategies' extra parameters as a last group) and its schedule."""

    def __init__(self, train: TrainConfig, epochs: int, steps_per_epoch: int) -> None:
        self.train = train
        self.epochs = max(epochs, 1)
        self.steps_per_epoch = max(steps_per_epoch, 1)

    def build(
        self, model: nn.Module, extras: Sequence[nn.Parameter] = (), state: dict[str, Any] | None = None
    ):
        """``(optimizer, scheduler)``, loaded from a resumed checkpoint's ``state`` when given."""
        train = self.train
        optimizer = build_optimizer(model, lr=train.lr, momentum=train.momentum_rate, l2_decay=train.l2_decay)
        if extras:
            optimizer.add_param_group({"params": list(extras), "weight_decay": train.l2_decay})
        scheduler = build_lr_scheduler(
            optimizer,
            strategy=train.lr_strategy,
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            step_epochs=train.step_epochs,
            warmup_epochs=train.warmup_epochs,
        )
        if state is not None:
            try:
                optimizer.load_state_dict(state["tensors"]["optimizer"])
            except ValueError as error:  # e.g. a strategy with extra parameters was added or removed
                raise CheckpointError(
                    f"checkpoint {state['path']}: its optimizer state does not fit this config's parameters "
                    f"({error}); use another checkpoint_path to start fresh"
                ) from None
            scheduler.load_state_dict(state["tensors"]["scheduler"])
        return optimizer, scheduler

    def rebuild(self, model: nn.Module, old_optimizer, old_scheduler, extras=(), *, keep_state: bool = False):
        """A fresh optimizer after pruning or new extra parameters (``keep_state`` keeps the momentum of
        parameters still trained), with the schedule where it was."""
        optimizer, scheduler = self.build(model, extras)
        lr = old_scheduler.get_last_lr()[0]  # every group follows the one schedule from train.lr
        state = old_scheduler.state_dict()
        state.update(base_lrs=scheduler.base_lrs, _last_lr=[lr] * len(optimizer.param_groups))
        scheduler.load_state_dict(state)
        for group in optimizer.param_groups:
            group["lr"] = lr
            if keep_state:
                for param in group["params"]:
                    if param in old_optimizer.state:
                        optimizer.state[param] = old_optimizer.state[param]
        return optimizer, scheduler
