"""Evaluation: exact top-1 / top-5 / loss, modes restored, and sums over distributed ranks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchslim.engine import (
    accuracy_counts,
    evaluate,
)


class FixedLogits(nn.Module):
    """Returns preset logits for sample indices fed as the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_inference_mode_enabled()))
        return self.logits[index[:, 0].long()]


def logits_with_ranks(ranks: list[int], num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct logits per row, and targets sitting at the given rank (0 = top)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.stack([torch.randperm(num_classes, generator=g).float() for _ in ranks])
    order = logits.argsort(dim=1, descending=True)
    targets = torch.tensor([int(order[i, r]) for i, r in enumerate(ranks)])
    return logits, targets


def index_loader(n: int, targets: torch.Tensor, batch_size: int = 3) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(n).float().unsqueeze(1), targets), batch_size=batch_size)


def test_evaluate_exact_top1_top5_loss_and_restores_mode():
    ranks = [0, 0, 1, 4, 5, 2, 0, 3]  # top-1 hits: 3 of 8; top-5 hits: 7 of 8
    logits, targets = logits_with_ranks(ranks, num_classes=6)
    model = FixedLogits(logits).train()
    result = evaluate(model, index_loader(8, targets))
    assert result.top1 == 37.5 and result.top5 == 87.5 and result.samples == 8
    assert result.loss == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    assert model.training and model.calls and all(c == (False, True) for c in model.calls)
    model.eval()
    evaluate(model, index_loader(8, targets), progress=True)
    assert not model.training
    partial = evaluate(model, index_loader(8, targets), max_batches=1)
    assert partial.samples == 3 and partial.top1 == pytest.approx(200 / 3)


def test_top5_with_fewer_than_five_classes_counts_everything():
    logits, targets = logits_with_ranks([0, 1, 2, 2], num_classes=3)
    result = evaluate(FixedLogits(logits), index_loader(4, targets))
    assert result.top1 == 25.0 and result.top5 == 100.0
    counts = accuracy_counts(logits, targets, ks=(1, 2, 5))
    assert counts.tolist() == [1, 2, 4]


def test_evaluate_empty_loader_gives_nan():
    empty = DataLoader(TensorDataset(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)), batch_size=2)
    result = evaluate(FixedLogits(torch.zeros(1, 3)), empty)
    assert result.samples == 0 and math.isnan(result.top1) and math.isnan(result.loss)


DIST_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from torchslim.engine import evaluate

    class FixedLogits(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.register_buffer("logits", logits)
        def forward(self, index):
            return self.logits[index[:, 0].long()]

    data_path, init = sys.argv[1], sys.argv[2]
    rank = 1 if os.fork() == 0 else 0  # two ranks from one torch import
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    logits, targets = torch.load(data_path, weights_only=True)
    shard = list(range(0, 5) if rank == 0 else range(5, len(targets)))  # uneven, disjoint shards
    loader = DataLoader(TensorDataset(torch.tensor(shard).float().unsqueeze(1), targets[shard]), batch_size=2)
    result = evaluate(FixedLogits(logits), loader, distributed=True)
    dist.destroy_process_group()
    if rank == 1:
        os._exit(0)
    _, status = os.wait()
    print(json.dumps(result.__dict__))
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_evaluate_distributed_sums_all_ranks(tmp_path):
    logits, targets = logits_with_ranks([0, 0, 1, 4, 5, 2, 0, 3], num_classes=6)
    torch.save((logits, targets), tmp_path / "data.pt")
    script = tmp_path / "dist_eval.py"
    script.write_text(DIST_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data.pt"), f"file://{tmp_path / 'store'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = evaluate(FixedLogits(logits), index_loader(8, targets))
    assert result["samples"] == 8 and result["top1"] == expected.top1 and result["top5"] == expected.top5
    assert result["loss"] == pytest.approx(expected.loss, rel=1e-6)  # float32 batch sums
