"""Nothing torchslim loads can run code: checkpoints are read with ``torch.load(weights_only=True)``,
saved models are JSON + safetensors, CIFAR batches go through a numpy-only unpickler, and a manifest
is never allowed to name a model the user did not ask for.

Each planted payload is a pickle whose ``__reduce__`` runs ``touch MARKER``; the tests show that
it is live (plain unpickling creates a control marker), that torchslim refuses it with one clear
error line, and that the marker never appears.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import shlex
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO, TINY_MODEL
from tests.helpers.checkpoints import fix_checkpoint_hashes
from tests.helpers.configs import tiny_run_config
from tests.helpers.data import write_fashion_mnist
from tests.helpers.processes import error_line, plain_cli
from torchslim.data import build_datasets
from torchslim.engine import load_checkpoint, verify_checkpoint
from torchslim.errors import CheckpointError, DataError
from torchslim.models import load_model

PACKAGE = REPO / "torchslim"


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def payload_state(marker: Path) -> dict:
    """Looks like a state dict: tensors, plus one entry that is the payload."""
    return {"stem.0.weight": torch.zeros(16, 3, 3, 3), "stem.1.running_mean": Payload(marker)}


def torch_save_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_payload_is_live(tmp_path):
    """The control: unpickling the payload without weights_only really runs it."""
    marker = tmp_path / "control"
    torch.load(io.BytesIO(torch_save_bytes(payload_state(marker))), weights_only=False)
    assert marker.exists()
    marker.unlink()
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.fixture(scope="module")
def base(cli, tmp_path_factory) -> dict:
    """One epoch of ``compress`` on the tiny model: checkpoint 0, its eval model, and a pruned saved model."""
    root = tmp_path_factory.mktemp("security")
    data = f"fashion-mnist:{write_fashion_mnist(root / 'fmnist', 64, 32)}"
    config = tiny_run_config(root / "config.yaml", root / "ckpt", model=TINY_MODEL, data=data)
    run = cli("compress", "--config", config, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    run = cli(
        "prune",
        "--model",
        TINY_MODEL,
        "--input-size",
        "16",
        "--target-flops",
        "0.3",
        "--round-to",
        "2",
        "--output",
        str(root / "pruned"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {
        "root": root,
        "config": config,
        "data": data,
        "checkpoint": root / "ckpt",
        "pruned": root / "pruned",
    }


# ---------------------------------------------------------------- checkpoints


def plant_in_checkpoint(base: dict, tmp_path: Path, file: str, marker: Path) -> Path:
    """A copy of the base checkpoint whose ``file`` is the payload, MANIFEST.json fixed up to match."""
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(base["checkpoint"], checkpoint)
    (checkpoint / "0" / file).write_bytes(torch_save_bytes(payload_state(marker)))
    fix_checkpoint_hashes(checkpoint / "0")
    verify_checkpoint(checkpoint / "0")  # the hashes match: only the pickle check stands in the way
    return checkpoint


def test_resume_refuses_a_pickle_payload_in_a_fresh_interpreter(base, tmp_path):
    marker = tmp_path / "PWNED"
    checkpoint = plant_in_checkpoint(base, tmp_path, "model.pt", marker)
    run = plain_cli(
        "compress", "--config", base["config"], "--checkpoint-path", str(checkpoint), "--num-epochs", "2"
    )
    error_line(run, "compress", 6, str(checkpoint / "0" / "model.pt"), "weights_only")
    assert not marker.exists()
    assert "epoch 1:" not in run.stderr and not (checkpoint / "1").exists()


@pytest.mark.parametrize("file", ["optimizer.pt", "rng.pt"])
def test_resume_refuses_a_pickle_payload_in_any_state_dict(cli, base, tmp_path, file):
    marker = tmp_path / "PWNED"
    checkpoint = plant_in_checkpoint(base, tmp_path, file, marker)
    run = cli(
        "compress", "--config", base["config"], "--checkpoint-path", str(checkpoint), "--num-epochs", "2"
    )
    error_line(run, "compress", 6, str(checkpoint / "0" / file), "weights_only")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=f"{file}.*weights_only"):
        load_checkpoint(checkpoint / "0")
    assert not marker.exists()


def test_resume_never_builds_a_model_the_checkpoint_names(cli, base, tmp_path):
    """meta.json still says the configured model, but its architecture manifest names os.system."""
    marker = tmp_path / "PWNED"
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(base["checkpoint"], checkpoint)
    meta = json.loads((checkpoint / "0" / "meta.json").read_text())
    meta["manifest"].update(model="os:system", kwargs={"command": f"touch {shlex.quote(str(marker))}"})
    (checkpoint / "0" / "meta.json").write_text(json.dumps(meta))
    fix_checkpoint_hashes(checkpoint / "0")
    run = cli(
        "compress", "--config", base["config"], "--checkpoint-path", str(checkpoint), "--num-epochs", "2"
    )
    error_line(run, "compress", 6, str(checkpoint / "0"), "manifest")
    assert not marker.exists()


# ---------------------------------------------------------------- weights given by the user


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
@pytest.mark.parametrize("command", ["compress", "prune", "flops"])
def test_pretrained_file_with_a_pickle_payload_is_refused(cli, base, tmp_path, command, kind):
    marker = tmp_path / "PWNED"
    weights = tmp_path / "weights.pth"
    state = payload_state(marker)
    weights.write_bytes(torch_save_bytes(state) if kind == "torch.save" else pickle.dumps(state, protocol=2))
    if command == "compress":
        argv = ["--config", base["config"], "--checkpoint-path", str(tmp_path / "ckpt")]
    else:
        argv = ["--model", TINY_MODEL, "--input-size", "16"] + (
            ["--target-flops", "0.3"] if command == "prune" else []
        )
    run = cli(command, *argv, "--pretrained", str(weights))
    error_line(run, command, 4, str(weights), "weights_only=True")
    assert not marker.exists()


def test_init_model_directory_is_checked_before_its_manifest_is_built(cli, base, tmp_path):
    marker = tmp_path / "PWNED"
    saved = tmp_path / "init"
    shutil.copytree(base["pruned"], saved)
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest.update(model="os:system", kwargs={"command": f"touch {shlex.quote(str(marker))}"})
    (saved / "manifest.json").write_text(json.dumps(manifest))
    run = cli(
        "compress",
        "--config",
        base["config"],
        "--checkpoint-path",
        str(tmp_path / "ckpt"),
        "--pretrained",
        str(saved),
    )
    error_line(run, "compress", 4, str(saved), "os:system")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["flops", "params"])
def test_saved_model_manifest_cannot_name_arbitrary_code(cli, base, tmp_path, command):
    marker = tmp_path / "PWNED"
    saved = tmp_path / "saved"
    shutil.copytree(base["pruned"], saved)
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest.update(model="os:system", kwargs={"command": f"touch {shlex.quote(str(marker))}"}, modules={})
    (saved / "manifest.json").write_text(json.dumps(manifest))
    run = cli(command, "--model-path", str(saved))
    error_line(run, command, 4, "names user code 'os:system'")
    assert not marker.exists()


# ---------------------------------------------------------------- data


def test_cifar_batch_with_a_pickle_payload_is_refused(tmp_path):

    marker = tmp_path / "PWNED"
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).write_bytes(pickle.dumps({"data": Payload(marker), "labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="data_batch_1.*refusing to load global"):
        build_datasets(f"cifar10:{tmp_path}")
    assert not marker.exists()


# ---------------------------------------------------------------- what torchslim writes


def safetensors_header(path: Path) -> dict:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length])


def test_saved_models_contain_no_pickle(base, monkeypatch):

    eval_model = base["checkpoint"] / "0" / "eval_model"
    for directory, expected in ((base["pruned"], set()), (eval_model, {"model.onnx"})):
        assert {p.name for p in directory.iterdir()} == {"manifest.json", "model.safetensors"} | expected
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["format"] == "torchslim.manifest/1"
        header = safetensors_header(directory / "model.safetensors")
        tensors = load_file(str(directory / "model.safetensors"))
        assert set(tensors) == set(header) - {"__metadata__"} and tensors
        for path in directory.iterdir():
            assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"
            assert b"_rebuild_tensor" not in path.read_bytes() and b"data.pkl" not in path.read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("loading a saved model must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    for directory in (base["pruned"], eval_model):
        model, _ = load_model(directory, trusted=TINY_MODEL)
        assert sum(p.numel() for p in model.parameters()) > 0


def test_checkpoint_state_dicts_load_with_weights_only(base):
    directory = base["checkpoint"] / "0"
    manifest = verify_checkpoint(directory)
    assert json.loads((directory / "meta.json").read_text())["epoch"] == 0
    for file in manifest["state_dicts"].values():
        torch.load(
            directory / file, weights_only=True, map_location="cpu"
        )  # raises on anything but plain data
    tensors, _ = load_checkpoint(directory)
    assert set(tensors) == set(manifest["state_dicts"])


# ---------------------------------------------------------------- the source


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_code_path_unpickles_freely():
    """Every torch.load passes weights_only=True; no pickle.load(s), unsafe YAML, numpy pickles or
    torch.jit.load; the one Unpickler subclass (CIFAR) restricts find_class."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(PACKAGE.parent)
        for call, name in _calls(tree):
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "torch.load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
            elif name in (
                "pickle.load",
                "pickle.loads",
                "yaml.load",
                "yaml.unsafe_load",
                "torch.jit.load",
                "dill.load",
                "dill.loads",
                "joblib.load",
                "eval",
                "exec",
            ):
                problems.append(f"{where}:{call.lineno}: {name}(...)")
            elif name in ("np.load", "numpy.load"):
                value = keywords.get("allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{where}:{call.lineno}: {name} with allow_pickle")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any("Unpickler" in ast.unparse(b) for b in node.bases):
                if not any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body):
                    problems.append(
                        f"{where}:{node.lineno}: Unpickler subclass {node.name} without find_class"
                    )
    assert not problems, "\n".join(problems)
