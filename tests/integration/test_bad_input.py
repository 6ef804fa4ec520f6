"""Bad input at every CLI entry point: one clear error line naming the problem, the documented exit
code (errors.py: config 2, data 3, model 4, pruning 5, checkpoint 6, training 7), no traceback unless
``--debug``.

Every case runs ``python -m torchslim ...`` in a process of its own. Importing torch and torchvision
costs several CPU-seconds per process, so most cases are forked from one server process that has
imported torchslim already and runs the real entry point (``runpy`` of ``torchslim.__main__``) in
each child, with the child's stdout and stderr captured and its real exit status returned. A few
cases use a plain ``subprocess.run`` of a fresh interpreter as well; set
``TORCHSLIM_TEST_PLAIN_SUBPROCESS=1`` to run every case that way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TESTS_DIR, TINY_MODEL
from tests.helpers.checkpoints import fix_checkpoint_hashes
from tests.helpers.configs import tiny_run_config
from tests.helpers.data import write_fashion_mnist
from tests.helpers.processes import error_line, plain_cli
from torchslim.engine import load_checkpoint, verify_checkpoint

# ---------------------------------------------------------------- inputs

UNSTABLE_MODEL = '''
"""tiny_net whose logits are scaled by $TINY_LOGIT_SCALE (default 1): "inf" makes every loss NaN."""
import os
import sys

sys.path.insert(0, {helpers!r})
from tiny_models import TinyNet  # noqa: E402


class Unstable(TinyNet):
    def forward(self, x):
        return super().forward(x) * float(os.environ.get("TINY_LOGIT_SCALE", "1"))


def unstable_net(num_classes=10):
    return Unstable(num_classes)
'''

OTHER_MODEL = """
from torch import nn


def other_net(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )
"""


def write_png(path: Path, value: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad-input")
    fmnist = write_fashion_mnist(root / "fmnist", 64, 32)
    (root / "unstable.py").write_text(UNSTABLE_MODEL.format(helpers=str(TESTS_DIR / "helpers")))
    (root / "other.py").write_text(OTHER_MODEL)
    # ImageNet lists: three classes of flat images, and one file in val that is not an image at all.
    imagenet = root / "imagenet"
    for split, count in (("train", 9), ("val", 6)):
        lines = [
            f"{split}/{i}.png {i % 3}"
            for i in range(count)
            if write_png(imagenet / split / f"{i}.png", 25 * i)
        ]
        (imagenet / f"{split}_list.txt").write_text("\n".join(lines) + "\n")
    (imagenet / "val" / "broken.jpg").write_bytes(b"this is not a JPEG")
    with open(imagenet / "val_list.txt", "a") as handle:
        handle.write("val/broken.jpg 1\n")
    # Class folders, with a broken file among the validation images.
    folder = root / "folder"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            for i in range(4):
                write_png(folder / split / name / f"{i}.png", 60 * i)
    (folder / "val" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return {
        "root": root,
        "data": f"fashion-mnist:{fmnist}",
        "model": f"{root / 'unstable.py'}:unstable_net",
        "other_model": f"{root / 'other.py'}:other_net",
        "imagenet": imagenet,
        "folder": folder,
    }


@pytest.fixture(scope="module")
def trained(cli, inputs) -> dict:
    """One epoch of ``compress`` (pruned at epoch 0): checkpoint 0 with its eval model and ONNX model."""
    root = inputs["root"]
    checkpoint = root / "trained"
    config = tiny_run_config(root / "trained.yaml", checkpoint, model=inputs["model"], data=inputs["data"])
    run = cli("compress", "--config", config, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (checkpoint / "0" / "eval_model" / "model.onnx").is_file()
    return {"config": config, "checkpoint": checkpoint, "eval_model": str(checkpoint / "0" / "eval_model")}


def copy_checkpoint(trained: dict, destination: Path) -> Path:
    shutil.copytree(trained["checkpoint"], destination)
    return destination


# ---------------------------------------------------------------- config


def test_missing_config_file_in_a_fresh_interpreter(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    run = plain_cli("compress", "--config", str(missing))
    error_line(run, "compress", 2, str(missing), "not found")


def test_debug_shows_the_traceback(tmp_path):
    run = plain_cli("--debug", "compress", "--config", str(tmp_path / "nowhere.yaml"))
    assert run.returncode != 0
    assert "Traceback (most recent call last)" in run.stderr and "ConfigError" in run.stderr


def test_missing_config_file(cli, tmp_path):
    missing = tmp_path / "absent.yaml"
    error_line(cli("compress", "--config", str(missing)), "compress", 2, str(missing), "not found")


def test_malformed_config(cli, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("version: 1.0\ntrain:\n  lr: [0.1, 0.2\n  batch_size: 8\n")
    error_line(cli("compress", "--config", str(config)), "compress", 2, str(config), "line", "invalid YAML")


def test_unknown_config_key_suggests_the_right_one(cli, inputs, tmp_path):
    config = Path(
        tiny_run_config(tmp_path / "typo.yaml", tmp_path / "ckpt", model=TINY_MODEL, data=inputs["data"])
    )
    config.write_text(config.read_text().replace("batch_size:", "batch_sise:"))
    message = error_line(
        cli("compress", "--config", str(config)), "compress", 2, str(config), "train.batch_sise"
    )
    assert "did you mean 'batch_size'" in message
    assert not (tmp_path / "ckpt").exists()


# ---------------------------------------------------------------- data


@pytest.mark.parametrize("command", ["compress", "eval", "infer"])
def test_missing_data(cli, inputs, trained, tmp_path, command):
    absent = tmp_path / "no-such-fmnist"
    data = f"fashion-mnist:{absent}"
    if command == "compress":
        argv = ["--config", trained["config"], "--data", data, "--checkpoint-path", str(tmp_path / "ckpt")]
    else:
        argv = ["--model-path", trained["eval_model"], "--data", data]
        argv += ["--model", inputs["model"]] if command == "eval" else []
    message = error_line(cli(command, *argv), command, 3, str(absent), "does not exist")
    assert (
        "apt-get install dataset-fashion-mnist" in message and "fashion-mnist:DIR" in message
    )  # how to get it


@pytest.mark.parametrize(
    "command, layout",
    [
        ("compress", "imagenet"),
        ("compress", "folder"),
        ("eval", "imagenet"),
        ("eval", "folder"),
        ("infer", "imagenet"),
        ("infer", "images"),
    ],
)
def test_undecodable_image_is_named(cli, inputs, trained, tmp_path, command, layout):
    broken = (
        inputs["imagenet"] / "val" / "broken.jpg"
        if layout != "folder"
        else inputs["folder"] / "val" / "dog" / "broken.jpg"
    )
    data = f"{layout}:{inputs[layout]}" if layout != "images" else None
    if command == "compress":
        argv = ["--config", trained["config"], "--data", data, "--checkpoint-path", str(tmp_path / "ckpt")]
    elif command == "eval":
        argv = ["--model-path", trained["eval_model"], "--model", inputs["model"], "--data", data]
    elif layout == "images":
        argv = [
            "--model-path",
            trained["eval_model"],
            "--images",
            str(broken),
            "--runs",
            "1",
            "--warmup",
            "0",
        ]
    else:
        argv = [
            "--model-path",
            trained["eval_model"],
            "--data",
            data,
            "--limit",
            "7",
            "--runs",
            "1",
            "--warmup",
            "0",
        ]
    error_line(cli(command, *argv), command, 3, str(broken))
    if command == "compress":
        assert not list((tmp_path / "ckpt").glob("[0-9]*"))


@pytest.mark.parametrize("command", ["compress", "eval"])
def test_skip_bad_images_succeeds_and_counts(cli, inputs, trained, tmp_path, command):
    data = f"imagenet:{inputs['imagenet']}"
    if command == "compress":
        argv = ["--config", trained["config"], "--data", data, "--checkpoint-path", str(tmp_path / "ckpt")]
    else:
        argv = ["--model-path", trained["eval_model"], "--model", inputs["model"], "--data", data]
    run = cli(command, *argv, "--skip-bad-images", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["bad_images_skipped"] == 1
    assert "skipped 1 unreadable images" in run.stderr
    assert str(inputs["imagenet"] / "val" / "broken.jpg") in run.stderr  # and which one


def write_lists(directory: Path, imagenet: Path, val_labels: list[str]) -> Path:
    """ImageNet lists in ``directory`` over the images of ``imagenet``, with the given val labels."""
    directory.mkdir()
    (directory / "train_list.txt").write_text(
        "".join(f"{imagenet}/train/{i}.png {i % 3}\n" for i in range(9))
    )
    lines = ["# a comment, then a blank line", ""] + [
        f"{imagenet}/val/{i}.png {label}" for i, label in enumerate(val_labels)
    ]
    (directory / "val_list.txt").write_text("\n".join(lines) + "\n")
    return directory


@pytest.mark.parametrize(
    "command, bad_label, problem",
    [
        ("eval", "-1", "is negative"),
        ("compress", "one", "is not an integer"),
        ("eval", "12", "out of range for a model with 10 classes"),
        ("compress", "12", "out of range for a model with 3 classes"),
        ("infer", "1.5", "is not an integer"),
    ],
)
def test_label_out_of_range_names_file_and_line(cli, inputs, trained, tmp_path, command, bad_label, problem):
    lists = write_lists(tmp_path / "lists", inputs["imagenet"], ["0", "1", bad_label, "2"])
    data = f"imagenet:{lists}"
    if command == "compress":
        argv = [
            "--config",
            trained["config"],
            "--data",
            data,
            "--checkpoint-path",
            str(tmp_path / "ckpt"),
            "--num-classes",
            "3",
        ]
    elif command == "eval":
        argv = ["--model-path", trained["eval_model"], "--model", inputs["model"], "--data", data]
    else:
        argv = ["--model-path", trained["eval_model"], "--data", data, "--runs", "1", "--warmup", "0"]
    # line 5: after the comment, the blank line and two good lines
    error_line(cli(command, *argv), command, 3, f"{lists / 'val_list.txt'} line 5", problem)


# ---------------------------------------------------------------- models and checkpoints


@pytest.fixture(scope="module")
def foreign_weights(inputs) -> Path:
    """A state dict of another architecture."""
    import torch
    from torch import nn

    path = inputs["root"] / "foreign.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).state_dict(), path)
    return path


@pytest.mark.parametrize("command", ["compress", "prune", "flops", "params"])
def test_pretrained_file_of_another_model(cli, inputs, trained, foreign_weights, tmp_path, command):
    if command == "compress":
        argv = [
            "--config",
            trained["config"],
            "--model",
            TINY_MODEL,
            "--checkpoint-path",
            str(tmp_path / "ckpt"),
        ]
    else:
        argv = ["--model", TINY_MODEL, "--input-size", "16"] + (
            ["--target-flops", "0.3"] if command == "prune" else []
        )
    run = cli(command, *argv, "--pretrained", str(foreign_weights))
    error_line(run, command, 4, str(foreign_weights), "'stem.0.weight'")  # the first key that does not match


@pytest.mark.parametrize("command", ["eval", "flops", "params"])
def test_saved_model_whose_weights_do_not_match_its_manifest(cli, inputs, trained, tmp_path, command):
    saved = tmp_path / "saved"
    shutil.copytree(trained["eval_model"], saved)
    manifest = json.loads((saved / "manifest.json").read_text())
    name = grow_first_pruned_weight(manifest)
    (saved / "manifest.json").write_text(json.dumps(manifest))
    argv = ["--model-path", str(saved), "--model", inputs["model"]] + (
        ["--data", inputs["data"]] if command == "eval" else []
    )
    error_line(cli(command, *argv), command, 4, str(saved / "model.safetensors"), f"'{name}'")


def grow_first_pruned_weight(manifest: dict) -> str:
    """Make the manifest record one pruned conv one output channel wider than its weights; its key."""
    for module, record in manifest["modules"].items():
        if "out_channels" in record["attrs"]:
            record["attrs"]["out_channels"] += 1
            record["tensors"]["weight"][0] += 1
            return f"{module}.weight"
    raise AssertionError(f"nothing was pruned: {manifest}")


def test_checkpoint_of_another_model(cli, inputs, trained, tmp_path):
    checkpoint = copy_checkpoint(trained, tmp_path / "ckpt")
    before = (checkpoint / "0" / "MANIFEST.json").read_bytes()
    run = cli(
        "compress",
        "--config",
        trained["config"],
        "--checkpoint-path",
        str(checkpoint),
        "--model",
        inputs["other_model"],
        "--num-epochs",
        "2",
    )
    error_line(run, "compress", 6, str(checkpoint / "0"), inputs["model"], inputs["other_model"])
    assert "epoch 1:" not in run.stderr and not (checkpoint / "1").exists()
    assert (checkpoint / "0" / "MANIFEST.json").read_bytes() == before


def test_checkpoint_whose_weights_do_not_match_its_manifest(cli, trained, tmp_path):
    """The files verify (hashes fixed up), but the recorded architecture says another shape."""
    checkpoint = copy_checkpoint(trained, tmp_path / "ckpt")
    meta = json.loads((checkpoint / "0" / "meta.json").read_text())
    name = grow_first_pruned_weight(meta["manifest"])
    (checkpoint / "0" / "meta.json").write_text(json.dumps(meta))
    fix_checkpoint_hashes(checkpoint / "0")
    verify_checkpoint(checkpoint / "0")
    run = cli(
        "compress", "--config", trained["config"], "--checkpoint-path", str(checkpoint), "--num-epochs", "2"
    )
    error_line(run, "compress", 6, str(checkpoint / "0"), f"'{name}'", "manifest")
    assert "epoch 1:" not in run.stderr and not (checkpoint / "1").exists()


# ---------------------------------------------------------------- pruning


def test_unreachable_flops_target_prune(cli):
    run = cli(
        "prune",
        "--model",
        TINY_MODEL,
        "--input-size",
        "16",
        "--target-flops",
        "0.99",
        "--pruned-params",
        r"head\.0\.weight",
    )
    error_line(run, "prune", 5, "99.00%", "unreachable")


@pytest.mark.parametrize("start_epoch", [0, 1])
def test_unreachable_flops_target_compress_fails_before_training(cli, inputs, tmp_path, start_epoch):
    checkpoint = tmp_path / "ckpt"
    config = tiny_run_config(
        tmp_path / "c.yaml",
        checkpoint,
        model=TINY_MODEL,
        data=inputs["data"],
        epochs=2,
        start_epoch=start_epoch,
        target=0.99,
        pruned=r"head\.0\.weight",
    )
    run = cli("compress", "--config", config)
    error_line(run, "compress", 5, "99.00%", "unreachable")
    assert "epoch 0:" not in run.stderr  # nothing was trained
    assert not list(checkpoint.glob("[0-9]*"))


# ---------------------------------------------------------------- training


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cli, trained, tmp_path):
    checkpoint = copy_checkpoint(trained, tmp_path / "ckpt")
    files = {p.name: p.read_bytes() for p in (checkpoint / "0").iterdir() if p.is_file()}
    run = cli(
        "compress",
        "--config",
        trained["config"],
        "--checkpoint-path",
        str(checkpoint),
        "--num-epochs",
        "2",
        env={"TINY_LOGIT_SCALE": "inf"},
    )
    message = error_line(run, "compress", 7, "epoch 1", "batch 0")
    assert "nan" in message.lower()
    assert "resuming from checkpoint" in run.stderr
    assert not (checkpoint / "1").exists() and not list(checkpoint.glob("1.*"))
    verify_checkpoint(checkpoint / "0")
    tensors, meta = load_checkpoint(checkpoint / "0")
    assert meta["epoch"] == 0 and tensors["model"]
    assert {p.name: p.read_bytes() for p in (checkpoint / "0").iterdir() if p.is_file()} == files


def test_unwritable_checkpoint_path_fails_before_training(cli, trained, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = blocker / "ckpt"
    run = cli("compress", "--config", trained["config"], "--checkpoint-path", str(path))
    error_line(run, "compress", 6, str(path), "not writable")
    assert "epoch 0:" not in run.stderr
