"""Mixed precision: the settings per device, and bf16 / grad-scaler training paths."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from tests.helpers.models import two_class_dataset, two_class_net
from torchslim.engine import (
    TrainOptions,
    autocast_settings,
    build_optimizer,
    capture_rng_state,
    evaluate,
    restore_rng_state,
    train_one_epoch,
)


def test_amp_settings_on_cpu_and_bf16_autocast_and_scaler_paths():
    assert autocast_settings("cpu", True) == (None, None)
    assert autocast_settings("cuda", False) == (None, None)
    model, loader = two_class_net(), DataLoader(two_class_dataset(16), batch_size=8)
    optimizer = build_optimizer(model, lr=0.01)
    stats = train_one_epoch(
        model, loader, optimizer, TrainOptions(amp_dtype=torch.bfloat16, channels_last=True, progress=False)
    )
    assert math.isfinite(stats.loss)
    before = model[6].weight.detach().clone()
    stats = train_one_epoch(
        model, loader, optimizer, TrainOptions(scaler=torch.amp.GradScaler("cpu"), progress=False)
    )
    assert math.isfinite(stats.loss) and not torch.equal(before, model[6].weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_training_rng_and_evaluate():
    device = torch.device("cuda")
    dtype, scaler = autocast_settings(device, True)
    assert dtype in (torch.bfloat16, torch.float16) and (scaler is None) == (dtype == torch.bfloat16)
    torch.manual_seed(0)
    model = two_class_net().to(device).to(memory_format=torch.channels_last)
    loader = DataLoader(two_class_dataset(), batch_size=8)
    optimizer = build_optimizer(model, lr=0.1)
    for epoch in range(4):
        stats = train_one_epoch(
            model,
            loader,
            optimizer,
            TrainOptions(device=device, amp_dtype=dtype, scaler=scaler, channels_last=True, progress=False),
            epoch=epoch,
        )
    assert stats.top1 >= 90.0
    result = evaluate(model, loader, device=device)
    assert result.samples == 64 and result.top1 >= 90.0
    state = capture_rng_state()
    assert "torch_cuda_0" in state
    first = torch.rand(4, device=device)
    restore_rng_state(state)
    assert torch.equal(first, torch.rand(4, device=device))
