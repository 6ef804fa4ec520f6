"""Checkpoints: exact round trips (RNG included), atomic saves that survive SIGKILL, corrupt and orphaned
ones, no pickles, and a resume that is bit-identical to straight training."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.helpers.models import two_class_dataset, two_class_net
from torchslim.engine import (
    EpochShuffleSampler,
    TrainOptions,
    build_lr_scheduler,
    build_optimizer,
    capture_rng_state,
    check_writable,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    train_one_epoch,
    verify_checkpoint,
)
from torchslim.errors import CheckpointError

# ----------------------------------------------------------------- helpers


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


def small_checkpoint(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(16, generator=g)}}


# --------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = two_class_net()
    optimizer = build_optimizer(model, lr=0.1, l2_decay=1e-4)
    scheduler = build_lr_scheduler(
        optimizer, strategy="piecewise_decay", epochs=3, steps_per_epoch=2, step_epochs=(1,)
    )
    train_one_epoch(
        model,
        DataLoader(two_class_dataset(16), batch_size=8),
        optimizer,
        TrainOptions(progress=False),
        scheduler=scheduler,
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
    fresh = two_class_net()
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
    control = marker if how == "raw_pickle" else tmp_path / "live"  # torch.save wraps it: a plain one
    live.write_bytes(payload if how == "raw_pickle" else pickle.dumps(Evil(control)))
    subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.loads(open({str(live)!r}, 'rb').read())"], check=True
    )
    assert control.exists()
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
            momentum = {0: {"momentum_buffer": torch.full((1000,), float(i))}}
            optimizer = {"state": momentum, "param_groups": [{"lr": 0.1}]}
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
    model = two_class_net(dropout=0.3)
    optimizer = build_optimizer(model, lr=0.05, l2_decay=1e-3)
    scheduler = build_lr_scheduler(
        optimizer, strategy="cosine_decay", epochs=2, steps_per_epoch=steps_per_epoch, warmup_epochs=0.5
    )
    return model, optimizer, scheduler


def _loader() -> DataLoader:
    return DataLoader(two_class_dataset(48), batch_size=8, sampler=EpochShuffleSampler(48, seed=7))


def test_resume_is_bit_identical_to_straight_training(tmp_path):
    torch.manual_seed(0)
    loader = _loader()
    model, optimizer, scheduler = _build(1, len(loader))
    for epoch in range(2):
        train_one_epoch(
            model, loader, optimizer, TrainOptions(progress=False), scheduler=scheduler, epoch=epoch
        )
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(0)
    loader = _loader()
    model, optimizer, scheduler = _build(1, len(loader))
    train_one_epoch(model, loader, optimizer, TrainOptions(progress=False), scheduler=scheduler, epoch=0)
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
    train_one_epoch(
        model, loader, optimizer, TrainOptions(progress=False), scheduler=scheduler, epoch=meta["epoch"] + 1
    )
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
    train_one_epoch(model, loader, optimizer, TrainOptions(progress=False), scheduler=scheduler, epoch=1)
    assert not torch.equal(model[6].weight, straight["6.weight"])
