"""Tests for torchslim.engine: schedules, optimizer groups, training, evaluation, checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchslim.engine import (
    LR_STRATEGIES,
    EpochShuffleSampler,
    accuracy_counts,
    append_jsonl,
    autocast_settings,
    build_lr_scheduler,
    build_optimizer,
    capture_rng_state,
    check_writable,
    evaluate,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_jsonl,
    restore_rng_state,
    save_checkpoint,
    seeded_generator,
    train_one_epoch,
    verify_checkpoint,
)
from torchslim.errors import CheckpointError, TrainingError

# ----------------------------------------------------------------- helpers


def tiny_net(num_classes: int = 2, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4, num_classes),
    )


def toy_dataset(n: int = 64, seed: int = 0) -> TensorDataset:
    """Two classes separable by brightness: class 0 is dark, class 1 bright."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 2
    images = torch.randn(n, 1, 8, 8, generator=g) * 0.3 + (targets.float() * 2 - 1).view(-1, 1, 1, 1)
    return TensorDataset(images, targets)


def lr_trace(strategy: str, steps: int, **kwargs) -> list[float]:
    """The LR used by each of the first ``steps`` batches (base LR 1.0)."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = build_lr_scheduler(optimizer, strategy=strategy, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def assert_same(a, b, where: str = "") -> None:
    """Exact structural equality of nested state dicts (tensors compared bitwise)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


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


def small_checkpoint(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(16, generator=g)}}


# ---------------------------------------------------------------- LR / optim


def test_piecewise_decay_values_at_boundaries():
    lrs = lr_trace("piecewise_decay", 60, epochs=6, steps_per_epoch=10, step_epochs=(4, 2), gamma=0.1)
    assert lrs[0] == 1.0 and lrs[19] == 1.0
    assert lrs[20] == pytest.approx(0.1) and lrs[39] == pytest.approx(0.1)
    assert lrs[40] == pytest.approx(0.01) and lrs[59] == pytest.approx(0.01)


def test_cosine_decay_endpoints_and_midpoint():
    lrs = lr_trace("cosine_decay", 41, epochs=4, steps_per_epoch=10)
    assert lrs[0] == 1.0
    assert lrs[20] == pytest.approx(0.5)
    assert lrs[10] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[40] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_warmup_ramps_linearly_then_follows_schedule():
    lrs = lr_trace("constant", 15, epochs=3, steps_per_epoch=10, warmup_epochs=1.0)
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10:] == [1.0] * 5
    cosine = lr_trace("cosine_decay", 5, epochs=2, steps_per_epoch=10, warmup_epochs=0.5)
    assert cosine[0] == pytest.approx(0.2 * 0.5 * (1 + math.cos(0.0)))
    assert cosine[4] == pytest.approx(1.0 * 0.5 * (1 + math.cos(math.pi * 0.4 / 2)))


def test_unknown_strategy_lists_known_ones():
    with pytest.raises(ValueError, match="exponential") as info:
        lr_trace("exponential", 1, epochs=1, steps_per_epoch=1)
    for name in LR_STRATEGIES:
        assert name in str(info.value)


def test_optimizer_decays_conv_and_linear_weights_only():
    model = tiny_net()
    model[0].weight.requires_grad_(False)  # frozen params are left out
    optimizer = build_optimizer(model, lr=0.1, momentum=0.8, l2_decay=1e-4)
    decay, no_decay = optimizer.param_groups
    assert {id(p) for p in decay["params"]} == {id(model[6].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[1].weight), id(model[1].bias), id(model[6].bias)}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert decay["momentum"] == 0.8 and decay["lr"] == 0.1
    (single,) = build_optimizer(tiny_net(), lr=0.1, l2_decay=1e-4, decay_bn_and_bias=True).param_groups
    assert len(single["params"]) == 5 and single["weight_decay"] == 1e-4


# ------------------------------------------------------------------ training


def test_train_one_epoch_learns_a_separable_problem():
    torch.manual_seed(0)
    model = tiny_net()
    loader = DataLoader(toy_dataset(), batch_size=8, sampler=EpochShuffleSampler(64, seed=1))
    optimizer = build_optimizer(model, lr=0.1)
    scheduler = build_lr_scheduler(optimizer, strategy="cosine_decay", epochs=6, steps_per_epoch=len(loader))
    stats = [
        train_one_epoch(model, loader, optimizer, scheduler=scheduler, epoch=e, progress=False)
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

    model, loader = tiny_net(), DataLoader(toy_dataset(40), batch_size=8)
    optimizer = build_optimizer(model, lr=0.01)
    both = Both()
    stats = train_one_epoch(model, loader, optimizer, hooks=both, progress=True, log_every=2)
    assert both.begin == [(i, 8, 8) for i in range(5)] and both.end == list(range(5))
    assert stats.images == 40
    end_only = EndOnly()
    stats = train_one_epoch(model, loader, optimizer, hooks=end_only, progress=False, max_batches=3)
    assert end_only.end == [0, 1, 2] and stats.images == 24 and stats.batches == 3


def test_nan_loss_raises_before_the_step_and_names_the_batch():
    torch.manual_seed(0)
    model = tiny_net()
    loader = DataLoader(toy_dataset(40), batch_size=8)
    optimizer = build_optimizer(model, lr=0.1)
    snapshots = {}

    def loss_fn(outputs, targets, images):
        loss = F.cross_entropy(outputs, targets)
        return loss * float("nan") if len(snapshots) == 2 else loss

    class Snapshot:
        def on_batch_end(self, i, loss_value):
            snapshots[i] = {k: v.detach().clone() for k, v in model.named_parameters()}

    with pytest.raises(TrainingError, match=r"epoch 7, batch 2") as info:
        train_one_epoch(model, loader, optimizer, epoch=7, loss_fn=loss_fn, hooks=Snapshot(), progress=False)
    assert "nan" in str(info.value)
    assert not torch.equal(snapshots[0]["0.weight"], snapshots[1]["0.weight"])
    for name, param in model.named_parameters():
        assert torch.equal(param, snapshots[1][name]), name


def test_loss_fn_receives_images_and_empty_loader_fails():
    model = tiny_net()
    optimizer = build_optimizer(model, lr=0.01)
    seen = []

    def loss_fn(outputs, targets, images):
        seen.append(images.shape)
        return F.cross_entropy(outputs, targets)

    train_one_epoch(
        model, DataLoader(toy_dataset(16), batch_size=8), optimizer, loss_fn=loss_fn, progress=False
    )
    assert seen == [torch.Size([8, 1, 8, 8])] * 2
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(TrainingError, match="epoch 3"):
        train_one_epoch(model, empty, optimizer, epoch=3, progress=False)


def test_amp_settings_on_cpu_and_bf16_autocast_and_scaler_paths():
    assert autocast_settings("cpu", True) == (None, None)
    assert autocast_settings("cuda", False) == (None, None)
    model, loader = tiny_net(), DataLoader(toy_dataset(16), batch_size=8)
    optimizer = build_optimizer(model, lr=0.01)
    stats = train_one_epoch(
        model, loader, optimizer, amp_dtype=torch.bfloat16, channels_last=True, progress=False
    )
    assert math.isfinite(stats.loss)
    before = model[6].weight.detach().clone()
    stats = train_one_epoch(model, loader, optimizer, scaler=torch.amp.GradScaler("cpu"), progress=False)
    assert math.isfinite(stats.loss) and not torch.equal(before, model[6].weight)


def test_epoch_shuffle_depends_only_on_seed_and_epoch():
    sampler = EpochShuffleSampler(50, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and len(sampler) == 50
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    again = EpochShuffleSampler(range(50), seed=3)
    again.set_epoch(1)
    assert list(again) == second
    a, b = seeded_generator(3, 1), seeded_generator(3, 2)
    assert not torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


# ---------------------------------------------------------------- evaluation


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


# --------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = tiny_net()
    optimizer = build_optimizer(model, lr=0.1, l2_decay=1e-4)
    scheduler = build_lr_scheduler(
        optimizer, strategy="piecewise_decay", epochs=3, steps_per_epoch=2, step_epochs=(1,)
    )
    train_one_epoch(
        model, DataLoader(toy_dataset(16), batch_size=8), optimizer, scheduler=scheduler, progress=False
    )
    states = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
    }
    meta = {"epoch": 1, "metrics": {"top1": 55.5, "loss": 0.25}, "arch": {"widths": [4, 2]}, "note": "ü"}
    path = save_checkpoint(tmp_path / "ckpt" / "1", tensors=states, meta=meta)
    assert path == tmp_path / "ckpt" / "1"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1"]  # no temp dir left behind
    assert sorted(p.name for p in path.iterdir()) == [
        "MANIFEST.json",
        "meta.json",
        "model.pt",
        "optimizer.pt",
        "rng.pt",
        "scheduler.pt",
    ]
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta
    assert list(loaded) == list(states)
    for name in states:
        assert_same(states[name], loaded[name], name)
    assert optimizer.state_dict()["state"]  # momentum buffers were really saved
    fresh = tiny_net()
    fresh.load_state_dict(loaded["model"])
    fresh_opt = build_optimizer(fresh, lr=0.5)
    fresh_opt.load_state_dict(loaded["optimizer"])
    assert_same(optimizer.state_dict(), fresh_opt.state_dict())
    assert verify_checkpoint(path)["state_dicts"]["model"] == "model.pt"


def test_rng_state_round_trip_restores_every_generator(tmp_path):
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.standard_normal()
    state = capture_rng_state()
    draws = (
        torch.rand(3),
        np.random.rand(3),
        random.random(),
        random.gauss(0, 1),
        np.random.standard_normal(),
    )
    save_checkpoint(tmp_path / "0", tensors={"rng": state}, meta={})
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "0")[0]["rng"])
    again = (
        torch.rand(3),
        np.random.rand(3),
        random.random(),
        random.gauss(0, 1),
        np.random.standard_normal(),
    )
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2:] == again[2:]
    with pytest.raises(CheckpointError, match="RNG"):
        restore_rng_state({"torch_cpu": torch.get_rng_state()})


def test_save_replaces_existing_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "3", tensors=small_checkpoint(0), meta={"v": 1})
    save_checkpoint(tmp_path / "3", tensors=small_checkpoint(1), meta={"v": 2})
    tensors, meta = load_checkpoint(tmp_path / "3")
    assert meta == {"v": 2} and torch.equal(tensors["model"]["w"], small_checkpoint(1)["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["3"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip", "sha256"),
        ("truncate", "bytes but the manifest says"),
        ("delete", "is missing"),
        ("manifest", "no MANIFEST.json"),
        ("manifest_garbage", "not valid JSON"),
    ],
)
def test_corrupt_checkpoint_raises_naming_the_path(tmp_path, damage, message):
    path = save_checkpoint(tmp_path / "1", tensors=small_checkpoint(), meta={"epoch": 1})
    target = path / "model.pt"
    data = target.read_bytes()
    if damage == "flip":
        target.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        target.unlink()
    elif damage == "manifest":
        (path / "MANIFEST.json").unlink()
        target = path
    else:
        target = path / "MANIFEST.json"
        target.write_text("{not json")
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(target) in str(info.value)


def test_find_latest_skips_corrupt_newest_and_ignores_stale_temp_dirs(tmp_path):
    assert find_latest_checkpoint(tmp_path / "missing") is None
    for epoch in (1, 2, 10):
        save_checkpoint(tmp_path / str(epoch), tensors=small_checkpoint(epoch), meta={"epoch": epoch})
    stale = tmp_path / f"11.tmp-{dead_pid()}"
    stale.mkdir()
    (stale / "model.pt").write_bytes(b"half")
    alive = tmp_path / f"12.tmp-{os.getppid()}"  # a live writer's temp dir is left alone
    alive.mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["1", "2", "10"]
    (tmp_path / "10" / "model.pt").write_bytes(b"garbage")
    reported = []
    latest = find_latest_checkpoint(tmp_path, on_corrupt=lambda p, e: reported.append((p, str(e))))
    assert latest == tmp_path / "2"
    assert [p for p, _ in reported] == [tmp_path / "10"] and "model.pt" in reported[0][1]
    assert not stale.exists() and alive.exists()
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint"):
        assert find_latest_checkpoint(tmp_path) == tmp_path / "2"


def test_orphaned_old_checkpoint_is_restored(tmp_path):
    """A kill between 'rename old aside' and 'rename new in' must not lose the old copy."""
    save_checkpoint(tmp_path / "5", tensors=small_checkpoint(5), meta={"epoch": 5})
    pid = dead_pid()
    os.replace(tmp_path / "5", tmp_path / f"5.old-{pid}")
    save_checkpoint(tmp_path / f"5.tmp-{pid}", tensors=small_checkpoint(6), meta={"epoch": 6})
    assert list_checkpoints(tmp_path) == []
    latest = find_latest_checkpoint(tmp_path)
    assert latest == tmp_path / "5" and load_checkpoint(latest)[1] == {"epoch": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["5"]


class Evil:
    """Unpickling this runs a shell command (creates a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["raw_pickle", "torch_save"])
def test_malicious_pickle_is_refused_without_running(tmp_path, how):
    path = save_checkpoint(tmp_path / "1", tensors={**small_checkpoint(), "optimizer": {"lr": 0.1}}, meta={})
    marker = tmp_path / "pwned"
    if how == "raw_pickle":
        payload = pickle.dumps(Evil(marker), protocol=2)
    else:
        payload_path = tmp_path / "evil.pt"
        torch.save({"state": Evil(marker)}, payload_path)
        payload = payload_path.read_bytes()
    # Prove the payload is live: plain unpickling in a throwaway process creates a marker.
    live = tmp_path / "payload.bin"
    live.write_bytes(payload if how == "raw_pickle" else pickle.dumps(Evil(tmp_path / "live")))
    subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.loads(open({str(live)!r}, 'rb').read())"], check=True
    )
    assert (tmp_path / "live").exists() or marker.exists()
    marker.unlink(missing_ok=True)
    # Plant it as the optimizer state with a matching manifest entry.
    (path / "optimizer.pt").write_bytes(payload)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    manifest["files"]["optimizer.pt"] = {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    verify_checkpoint(path)  # integrity is fine; safety is the loader's job
    with pytest.raises(CheckpointError, match="optimizer.pt") as info:
        load_checkpoint(path)
    assert "weights_only" in str(info.value)
    assert not marker.exists()


def test_save_rejects_unsafe_names_objects_and_meta(tmp_path):
    with pytest.raises(ValueError, match="name"):
        save_checkpoint(tmp_path / "1", tensors={"../x": {}}, meta={})
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(tmp_path / "1", tensors={"model": {"obj": Evil("x")}}, meta={})
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "1", tensors={}, meta={"t": torch.zeros(1)})
    assert list(tmp_path.iterdir()) == []
    manifest_path = save_checkpoint(tmp_path / "2", tensors=small_checkpoint(), meta={}) / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["../../etc/passwd"] = {"sha256": "0", "size": 1}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="invalid file name"):
        load_checkpoint(tmp_path / "2")


def test_check_writable(tmp_path):
    check_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="not writable") as info:
        check_writable(blocker / "ckpt")
    assert str(blocker / "ckpt") in str(info.value)
    with pytest.raises(CheckpointError, match="MiB free"):
        check_writable(tmp_path / "c", min_free_bytes=2**62)


def test_metrics_jsonl_survives_a_torn_line(tmp_path):
    log = tmp_path / "runs" / "metrics.jsonl"
    append_jsonl(log, {"epoch": 0, "top1": 10.0})
    with open(log, "a") as f:
        f.write('{"epoch": 1, "to')  # a writer killed mid-line
    append_jsonl(log, {"epoch": 1, "top1": 20.0})
    with pytest.warns(UserWarning, match="metrics.jsonl:2"):
        records = read_jsonl(log)
    assert records == [{"epoch": 0, "top1": 10.0}, {"epoch": 1, "top1": 20.0}]
    assert read_jsonl(tmp_path / "none.jsonl") == []


KILL_SCRIPT = textwrap.dedent(
    """
    import json, os, random, signal, sys, time
    import torch
    from torchslim.engine import find_latest_checkpoint, load_checkpoint, save_checkpoint

    root, kills, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    numel = 5 * 2**20 // 4  # 5 MB of float32

    def writer(start):
        torch.set_num_threads(1)
        i = start
        while True:  # even i creates root/<i//2>, odd i replaces it
            optimizer = {"state": {0: {"momentum_buffer": torch.full((1000,), float(i))}}, "param_groups": [{"lr": 0.1}]}
            tensors = {"model": {"w": torch.full((numel,), float(i))}, "optimizer": optimizer}
            save_checkpoint(os.path.join(root, str(i // 2)), tensors=tensors, meta={"i": i})
            i += 1

    rng = random.Random(seed)
    start, report = 0, []
    for _ in range(kills):
        pid = os.fork()
        if pid == 0:
            try:
                writer(start)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.05, 0.5))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        corrupt = []
        latest = find_latest_checkpoint(root, on_corrupt=lambda p, e: corrupt.append(str(e)))
        assert not corrupt, corrupt
        leftovers = [n for n in os.listdir(root) if ".tmp-" in n or ".old-" in n]
        assert not leftovers, leftovers
        if latest is None:
            report.append(None)
            continue
        tensors, meta = load_checkpoint(latest)
        i = meta["i"]
        assert latest.name == str(i // 2), (latest, i)
        assert torch.equal(tensors["model"]["w"], torch.full((numel,), float(i)))
        assert float(tensors["optimizer"]["state"][0]["momentum_buffer"][0]) == i
        report.append(i)
        start = i + 1
    print(json.dumps(report))
    """
)


def test_sigkill_during_saves_always_leaves_a_valid_checkpoint(tmp_path):
    script = tmp_path / "kill_saves.py"
    script.write_text(KILL_SCRIPT)
    root = tmp_path / "ckpt"
    root.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script), str(root), "5", "1234"], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    saved = [i for i in report if i is not None]
    assert saved and saved == sorted(saved)  # a restarted writer never goes backwards
    latest = find_latest_checkpoint(root)
    assert latest is not None and load_checkpoint(latest)[1]["i"] == saved[-1]


# ---------------------------------------------------------------- resume


def _build(seed: int, steps_per_epoch: int):
    torch.manual_seed(seed)
    model = tiny_net(dropout=0.3)
    optimizer = build_optimizer(model, lr=0.05, l2_decay=1e-3)
    scheduler = build_lr_scheduler(
        optimizer, strategy="cosine_decay", epochs=2, steps_per_epoch=steps_per_epoch, warmup_epochs=0.5
    )
    return model, optimizer, scheduler


def _loader() -> DataLoader:
    return DataLoader(toy_dataset(48), batch_size=8, sampler=EpochShuffleSampler(48, seed=7))


def test_resume_is_bit_identical_to_straight_training(tmp_path):
    torch.manual_seed(0)
    loader = _loader()
    model, optimizer, scheduler = _build(1, len(loader))
    for epoch in range(2):
        train_one_epoch(model, loader, optimizer, scheduler=scheduler, epoch=epoch, progress=False)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(0)
    loader = _loader()
    model, optimizer, scheduler = _build(1, len(loader))
    train_one_epoch(model, loader, optimizer, scheduler=scheduler, epoch=0, progress=False)
    states = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
    }
    save_checkpoint(tmp_path / "0", tensors=states, meta={"epoch": 0})
    after_first_epoch = capture_rng_state()

    # A new process, in effect: fresh objects, other seeds, then everything restored.
    random.seed(5)
    np.random.seed(5)
    loader = _loader()
    model, optimizer, scheduler = _build(99, len(loader))
    tensors, meta = load_checkpoint(find_latest_checkpoint(tmp_path))
    model.load_state_dict(tensors["model"])
    optimizer.load_state_dict(tensors["optimizer"])
    scheduler.load_state_dict(tensors["scheduler"])
    restore_rng_state(tensors["rng"])
    train_one_epoch(model, loader, optimizer, scheduler=scheduler, epoch=meta["epoch"] + 1, progress=False)
    resumed = model.state_dict()
    assert list(resumed) == list(straight)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name

    # Sensitivity check: the same resume with a different RNG state (dropout masks) diverges.
    model, optimizer, scheduler = _build(99, len(loader))
    model.load_state_dict(tensors["model"])
    optimizer.load_state_dict(tensors["optimizer"])
    scheduler.load_state_dict(tensors["scheduler"])
    restore_rng_state(after_first_epoch)
    torch.manual_seed(42)
    train_one_epoch(model, loader, optimizer, scheduler=scheduler, epoch=1, progress=False)
    assert not torch.equal(model[6].weight, straight["6.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_training_rng_and_evaluate():
    device = torch.device("cuda")
    dtype, scaler = autocast_settings(device, True)
    assert dtype in (torch.bfloat16, torch.float16) and (scaler is None) == (dtype == torch.bfloat16)
    torch.manual_seed(0)
    model = tiny_net().to(device).to(memory_format=torch.channels_last)
    loader = DataLoader(toy_dataset(), batch_size=8)
    optimizer = build_optimizer(model, lr=0.1)
    for epoch in range(4):
        stats = train_one_epoch(
            model,
            loader,
            optimizer,
            device=device,
            epoch=epoch,
            amp_dtype=dtype,
            scaler=scaler,
            channels_last=True,
            progress=False,
        )
    assert stats.top1 >= 90.0
    result = evaluate(model, loader, device=device)
    assert result.samples == 64 and result.top1 >= 90.0
    state = capture_rng_state()
    assert "torch_cuda_0" in state
    first = torch.rand(4, device=device)
    restore_rng_state(state)
    assert torch.equal(first, torch.rand(4, device=device))
