"""One epoch of training: it learns, calls hooks, stops on a NaN loss before the step, takes a loss_fn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.models import two_class_dataset, two_class_net
from torchslim.engine import (
    EpochShuffleSampler,
    TrainOptions,
    build_lr_scheduler,
    build_optimizer,
    train_one_epoch,
)
from torchslim.errors import TrainingError


def test_train_one_epoch_learns_a_separable_problem():
    torch.manual_seed(0)
    model = two_class_net()
    loader = DataLoader(two_class_dataset(), batch_size=8, sampler=EpochShuffleSampler(64, seed=1))
    optimizer = build_optimizer(model, lr=0.1)
    scheduler = build_lr_scheduler(optimizer, strategy="cosine_decay", epochs=6, steps_per_epoch=len(loader))
    stats = [
        train_one_epoch(model, loader, optimizer, TrainOptions(progress=False), scheduler=scheduler, epoch=e)
        for e in range(6)
    ]
    assert stats[-1].loss < 0.5 * stats[0].loss
    assert stats[-1].top1 >= 95.0
    assert stats[-1].images == 64 and stats[-1].batches == 8 and stats[-1].images_per_s > 0
    assert scheduler.last_epoch == 6 * 8
    assert stats[-1].lr == optimizer.param_groups[0]["lr"]


def test_hooks_are_called_per_batch_and_missing_methods_skipped(capsys):
    class Both:
        def __init__(self):
            self.begin, self.end = [], []

        def on_batch_begin(self, i, images, targets):
            self.begin.append((i, len(images), len(targets)))

        def on_batch_end(self, i, loss_value):
            assert isinstance(loss_value, float)
            self.end.append(i)

    class EndOnly:
        def __init__(self):
            self.end = []

        def on_batch_end(self, i, loss_value):
            self.end.append(i)

    model, loader = two_class_net(), DataLoader(two_class_dataset(40), batch_size=8)
    optimizer = build_optimizer(model, lr=0.01)
    both = Both()
    stats = train_one_epoch(model, loader, optimizer, TrainOptions(hooks=both, progress=True, log_every=2))
    assert both.begin == [(i, 8, 8) for i in range(5)] and both.end == list(range(5))
    assert stats.images == 40
    end_only = EndOnly()
    stats = train_one_epoch(
        model, loader, optimizer, TrainOptions(hooks=end_only, progress=False, max_batches=3)
    )
    assert end_only.end == [0, 1, 2] and stats.images == 24 and stats.batches == 3


def test_nan_loss_raises_before_the_step_and_names_the_batch():
    torch.manual_seed(0)
    model = two_class_net()
    loader = DataLoader(two_class_dataset(40), batch_size=8)
    optimizer = build_optimizer(model, lr=0.1)
    snapshots = {}

    def loss_fn(outputs, targets, images):
        loss = F.cross_entropy(outputs, targets)
        return loss * float("nan") if len(snapshots) == 2 else loss

    class Snapshot:
        def on_batch_end(self, i, loss_value):
            snapshots[i] = {k: v.detach().clone() for k, v in model.named_parameters()}

    with pytest.raises(TrainingError, match=r"epoch 7, batch 2") as info:
        train_one_epoch(
            model, loader, optimizer, TrainOptions(loss_fn=loss_fn, hooks=Snapshot(), progress=False), epoch=7
        )
    assert "nan" in str(info.value)
    assert not torch.equal(snapshots[0]["0.weight"], snapshots[1]["0.weight"])
    for name, param in model.named_parameters():
        assert torch.equal(param, snapshots[1][name]), name


def test_loss_fn_receives_images_and_empty_loader_fails():
    model = two_class_net()
    optimizer = build_optimizer(model, lr=0.01)
    seen = []

    def loss_fn(outputs, targets, images):
        seen.append(images.shape)
        return F.cross_entropy(outputs, targets)

    train_one_epoch(
        model,
        DataLoader(two_class_dataset(16), batch_size=8),
        optimizer,
        TrainOptions(loss_fn=loss_fn, progress=False),
    )
    assert seen == [torch.Size([8, 1, 8, 8])] * 2
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(TrainingError, match="epoch 3"):
        train_one_epoch(model, empty, optimizer, TrainOptions(progress=False), epoch=3)
