"""DistillationStrategy: its epoch window, config errors, alpha = 0 equals plain fine-tuning, a distilling
run killed (SIGKILL) after its first checkpoint and resumed, and the optional feature-map loss (adapters
trained, checkpointed, resumed, and identical across torchrun ranks)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tests.helpers.configs import compression_config, uniform_strategy, write_config
from tests.helpers.data import write_fashion_mnist
from tests.helpers.processes import assert_killed, run_python, torchrun
from torchslim.compress.compressor import Compressor
from torchslim.compress.strategies import CompressionContext, DistillationStrategy, build_strategy
from torchslim.compress.strategies.distill import TEACHER_DIR
from torchslim.config import load_config
from torchslim.engine import load_checkpoint, read_jsonl
from torchslim.errors import ConfigError, ModelError
from torchslim.models import build_model, load_model, save_model
from torchslim.recovery.distillation import soft_label_loss

FACTORY = """
from torch import nn


def factory(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A tiny model factory file, generated Fashion-MNIST-format data, and initial weights."""
    root = tmp_path_factory.mktemp("distill_inputs")
    (root / "tiny.py").write_text(FACTORY)
    data = write_fashion_mnist(root / "fmnist", 128, 32)
    model_ref = f"{root / 'tiny.py'}:factory"
    torch.manual_seed(123)
    initial = build_model(model_ref, num_classes=10)
    save_file({k: v.contiguous() for k, v in initial.state_dict().items()}, str(root / "initial.safetensors"))
    return {
        "root": root,
        "model": model_ref,
        "data": f"fashion-mnist:{data}",
        "init": str(root / "initial.safetensors"),
    }


def make_config(
    inputs: dict,
    checkpoint: Path | None,
    *,
    distill: bool = True,
    prune_at: int | None = None,
    epochs: int = 1,
    **distiller,
) -> dict:
    """A config for the tiny model that distils from epoch 0 (and prunes by half at ``prune_at``);
    ``distiller`` updates distillers.distiller_1 (``end_epoch`` goes to the strategy)."""
    strategies = {}
    if prune_at is not None:
        strategies["prune"] = uniform_strategy(
            start_epoch=prune_at, target_ratio=0.5, pruned_params=r"[0-9]+\.weight"
        )
    if distill:
        strategies["distill"] = {
            "class": "DistillationStrategy",
            "distiller": "distiller_1",
            "start_epoch": 0,
            "end_epoch": distiller.pop("end_epoch", None),
        }
    soft_labels = {
        "class": "SoftLabelDistiller",
        "temperature": 4.0,
        "alpha": 0.5,
        "teacher": None,
        **distiller,
    }
    return compression_config(
        checkpoint,
        strategies=strategies,
        epochs=epochs,
        model=inputs["model"],
        data=inputs["data"],
        round_to=1,
        sections={"distillers": {"distiller_1": soft_labels}},
        train={"input_size": 16, "device": "cpu", "seed": 0, "bn_recalibration_batches": 2},
        changes={
            "compressor.init_model": inputs["init"],
            "compressor.save_eval_model": False,
            "compressor.save_inference_model": False,
        },
    )


# ---------------------------------------------------------------- the loss


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ({"temprature": 2.0}, "distillers.distiller_1.temprature", "did you mean 'temperature'"),
        ({"alpha": 1.5}, "distillers.distiller_1.alpha", "must be in [0, 1]"),
        ({"temperature": 0}, "distillers.distiller_1.temperature", "must be > 0"),
        ({"class": "L2Distiller"}, "distillers.distiller_1.class", "not supported"),
        ({"teacher": "no/such/teacher.pth"}, "distillers.distiller_1.teacher", "no such file"),
        ({"distillation_loss_weight": 1}, "distillers.distiller_1.distillation_loss_weight", "use 'alpha'"),
        ({"teacher_feature_map": "t.res5"}, "distillers.distiller_1.teacher_feature_map", "'feature_maps'"),
        ({"student_feature_map": "s.conv6"}, "distillers.distiller_1.student_feature_map", "'feature_maps'"),
        ({"class": "L2Distiller"}, "distillers.distiller_1.class", "SoftLabelDistiller's 'feature_maps' key"),
        ({"feature_weight": -1}, "distillers.distiller_1.feature_weight", "must be >= 0"),
        ({"feature_maps": ["2", "5", "2"]}, "distillers.distiller_1.feature_maps[2]", "'2' is listed twice"),
        ({"feature_maps": [2]}, "distillers.distiller_1.feature_maps[0]", "expected a string"),
    ],
)
def test_bad_distiller_keys_name_the_key_and_the_file(inputs, tmp_path, change, key, problem):
    config = make_config(inputs, None)
    config["distillers"]["distiller_1"].update(change)
    path = write_config(tmp_path / "bad.yaml", config)
    slim = load_config(path)
    with pytest.raises(ConfigError) as caught:
        build_strategy("distill", slim.strategies["distill"], slim)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message
    assert "(line " in message


# ---------------------------------------------------------------- the epoch window and the teacher


def _context(model: torch.nn.Module, inputs: dict) -> CompressionContext:
    return CompressionContext(
        model=model,
        base_name=inputs["model"],
        base_kwargs={"num_classes": 10},
        example_input=torch.zeros(1, 3, 16, 16),
        aliases={},
    )


def test_loss_is_replaced_only_inside_the_window_and_the_teacher_is_frozen(inputs, tmp_path):
    config = make_config(inputs, None, end_epoch=3)
    config["strategies"]["distill"]["start_epoch"] = 1
    slim = load_config(write_config(tmp_path / "c.yaml", config))
    strategy = build_strategy("distill", slim.strategies["distill"], slim)
    assert isinstance(strategy, DistillationStrategy)
    model = build_model(inputs["model"], num_classes=10).train()
    context = _context(model, inputs)
    strategy.on_compression_begin(context)
    active = []
    for epoch in range(5):
        context.epoch = epoch
        strategy.on_epoch_begin(context)
        active.append(context.loss_fn == strategy.loss)
        strategy.on_epoch_end(context)
    assert active == [False, True, True, False, False]  # [start_epoch, end_epoch)
    assert context.loss_fn is None
    teacher = strategy.teacher
    assert teacher is not None and teacher is not model and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(
        torch.equal(a, b)
        for a, b in zip(teacher.state_dict().values(), model.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("kind", ["weights_file", "saved_dir"])
def test_teacher_from_a_path(inputs, tmp_path, kind):
    torch.manual_seed(7)
    source = build_model(inputs["model"], num_classes=10)
    if kind == "weights_file":
        path = tmp_path / "teacher.safetensors"
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        path = tmp_path / "teacher_dir"
        save_model(path, source, inputs["model"], {"num_classes": 10}, input_size=16)
    slim = load_config(write_config(tmp_path / "c.yaml", make_config(inputs, None, teacher=str(path))))
    strategy = build_strategy("distill", slim.strategies["distill"], slim)
    context = _context(build_model(inputs["model"], num_classes=10), inputs)
    strategy.on_compression_begin(context)
    strategy.on_epoch_begin(context)
    loaded = strategy.teacher.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())


# ---------------------------------------------------------------- alpha = 0 is plain fine-tuning


def test_alpha_zero_equals_plain_fine_tuning_bit_for_bit(inputs, tmp_path):
    """Same seed, same data order, one epoch of 4 steps: identical weights with and without the strategy."""
    weights = {}
    for name, distill, alpha in (("plain", False, 0.0), ("alpha0", True, 0.0), ("alpha05", True, 0.5)):
        checkpoint = tmp_path / name
        config = make_config(inputs, checkpoint, distill=distill, alpha=alpha)
        summary = Compressor(
            load_config(write_config(tmp_path / f"{name}.yaml", config)), progress=False
        ).run()
        assert summary.epochs_run == [0]
        weights[name] = load_checkpoint(checkpoint / "0")[0]["model"]
    plain, alpha0, alpha05 = weights["plain"], weights["alpha0"], weights["alpha05"]
    assert plain.keys() == alpha0.keys()
    for key in plain:
        assert torch.equal(plain[key], alpha0[key]), key
    assert any(
        not torch.equal(plain[k], alpha05[k]) for k in plain if k.endswith("weight")
    )  # the teacher matters


# ---------------------------------------------------------------- kill after the first checkpoint, resume

KILLER = """
import os, signal, sys
from torchslim.compress.compressor import Compressor

original = Compressor.save_epoch


def save_then_die(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # right after the first complete checkpoint
    return result


Compressor.save_epoch = save_then_die
from torchslim.cli.main import main

sys.exit(main(["compress", "--config", sys.argv[1], "--no-progress"]))
"""


def test_distilling_run_resumes_after_a_kill_with_one_saved_teacher(inputs, tmp_path):
    checkpoint = tmp_path / "ckpt"
    config = write_config(
        tmp_path / "run.yaml", make_config(inputs, checkpoint, prune_at=1, epochs=3, end_epoch=2)
    )
    assert_killed(run_python(KILLER, str(config)))
    assert sorted(p.name for p in checkpoint.iterdir() if p.name.isdigit()) == ["0"]
    teacher_weights = checkpoint / TEACHER_DIR / "model.safetensors"
    saved_once = teacher_weights.stat()

    summary = Compressor(load_config(config), progress=False).run()

    assert summary.resumed_from == str(checkpoint / "0")
    assert summary.epochs_run == [1, 2]
    assert teacher_weights.stat().st_mtime_ns == saved_once.st_mtime_ns  # loaded, not written again
    assert teacher_weights.stat().st_ino == saved_once.st_ino
    teacher, _ = load_model(
        checkpoint / TEACHER_DIR, trusted=inputs["model"]
    )  # the initial (unpruned) model, once
    initial = build_model(inputs["model"], num_classes=10)
    initial.load_state_dict(load_file(inputs["init"]))
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in initial.state_dict().items())
    for epoch_dir in (p for p in checkpoint.iterdir() if p.name.isdigit()):
        assert {p.name for p in epoch_dir.iterdir()} >= {"model.pt", "meta.json"}
        assert not any("teacher" in p.name for p in epoch_dir.iterdir())
    assert [p.name for p in checkpoint.iterdir() if "teacher" in p.name] == [TEACHER_DIR]
    distilled = [e for e in summary.events if e.get("strategy") == "distill"]
    assert [e["epoch"] for e in distilled] == [0, 1]  # end_epoch 2 is exclusive
    for event in distilled:
        assert event["teacher_seconds"] > 0 and 0 < event["teacher_percent_of_epoch"] < 100
    pruned = [e for e in summary.events if e.get("strategy") == "prune"]
    assert len(pruned) == 1 and pruned[0]["epoch"] == 1 and pruned[0]["macs_after"] < pruned[0]["macs_before"]


# ---------------------------------------------------------------- feature maps

FEATURE_MAPS = ["2", "5", "7"]  # ReLU (N, 16, 16, 16), ReLU (N, 32, 8, 8), Flatten (N, 32) of the tiny model


def _feature_strategy(inputs, tmp_path, **distiller):
    slim = load_config(write_config(tmp_path / "f.yaml", make_config(inputs, None, **distiller)))
    return build_strategy("distill", slim.strategies["distill"], slim)


def _adapters(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(checkpoint)[0]["strategies"]["distill"]["adapters"]


def test_feature_loss_adds_the_adapted_mse_and_trains_the_adapters(inputs, tmp_path):
    strategy = _feature_strategy(inputs, tmp_path, feature_maps=["2", "7"], feature_weight=2.0)
    torch.manual_seed(0)
    model = build_model(inputs["model"], num_classes=10)
    context = _context(model, inputs)
    strategy.on_compression_begin(context)  # the teacher: the model as it is now
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))  # the student drifts from the teacher
    strategy.on_epoch_begin(context)
    adapters = strategy.extra_parameters(context)
    assert [tuple(a.shape) for a in adapters] == [(16, 16), (32, 32)]
    assert all(torch.equal(a, torch.eye(len(a))) for a in adapters)  # unpruned: the identity
    images, targets = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    model.train()
    outputs = model(images)
    loss = strategy.loss(outputs, targets, images)

    teacher = strategy.teacher
    with torch.no_grad():
        soft = soft_label_loss(outputs, teacher(images), targets, temperature=4.0, alpha=0.5)
        mse = [F.mse_loss(model[:i](images), teacher[:i](images)) for i in (3, 8)]  # outputs of '2' and '7'
    torch.testing.assert_close(loss.detach(), soft + 2.0 * (mse[0] + mse[1]) / 2, rtol=1e-5, atol=1e-6)
    assert float(loss.detach()) > float(soft) + 1e-3

    optimizer = torch.optim.SGD([*model.parameters(), *adapters], lr=0.1)
    optimizer.zero_grad()
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in adapters)
    optimizer.step()
    assert all(not torch.equal(a.detach(), torch.eye(len(a))) for a in adapters)
    strategy.on_epoch_end(context)
    for module in [*model.modules(), *teacher.modules()]:
        assert not module._forward_hooks  # the hooks live while an epoch trains


def test_adapter_state_round_trip_restores_the_weights_exactly(inputs, tmp_path):
    strategy = _feature_strategy(inputs, tmp_path, feature_maps=FEATURE_MAPS)
    model = build_model(inputs["model"], num_classes=10)
    context = _context(model, inputs)
    strategy.on_compression_begin(context)
    strategy.on_epoch_begin(context)
    adapters = strategy.extra_parameters(context)
    with torch.no_grad():
        for adapter in adapters:
            adapter.add_(torch.randn_like(adapter))
    state = strategy.state_dict()
    assert list(state["adapters"]) == FEATURE_MAPS
    saved = {k: v.clone() for k, v in state["adapters"].items()}
    with torch.no_grad():
        adapters[0].zero_()  # the state is a copy, not a view of the live weights
    assert torch.equal(state["adapters"]["2"], saved["2"])

    resumed = _feature_strategy(inputs, tmp_path, feature_maps=FEATURE_MAPS)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.state_dict()["adapters"]["5"], saved["5"])  # saved again before being placed
    fresh = _context(build_model(inputs["model"], num_classes=10), inputs)
    restored = resumed.extra_parameters(fresh)  # what the compressor hands the optimizer at resume
    assert all(torch.equal(r.detach(), saved[n]) for r, n in zip(restored, FEATURE_MAPS, strict=True))
    resumed.on_compression_begin(fresh)
    resumed.teacher = strategy.teacher
    resumed.on_epoch_begin(fresh)
    refitted = resumed.extra_parameters(fresh)
    assert all(a is b for a, b in zip(refitted, restored, strict=True))  # shapes fit: kept, same objects


def test_unknown_feature_map_is_a_config_error_before_training(inputs, tmp_path):
    checkpoint = tmp_path / "ckpt"
    path = write_config(tmp_path / "c.yaml", make_config(inputs, checkpoint, feature_maps=["2", "55"]))
    with pytest.raises(ConfigError) as caught:
        Compressor(load_config(path), progress=False).run()
    message = str(caught.value)
    assert message.startswith(f"{path}: distillers.distiller_1.feature_maps[1]: the model has no module '55'")
    assert "did you mean '5'" in message and "(line " in message
    assert not any(p.name.isdigit() for p in checkpoint.iterdir())  # nothing trained


def test_feature_map_that_is_not_a_feature_tensor_is_a_model_error(inputs, tmp_path):
    strategy = _feature_strategy(inputs, tmp_path, feature_maps=["8"])
    context = _context(build_model(inputs["model"], num_classes=10), inputs)
    strategy.on_compression_begin(context)
    strategy.on_epoch_begin(context)
    context.model[8].register_forward_hook(lambda module, args, output: (output, output))  # not a tensor
    with pytest.raises(ModelError, match=r"feature map '8': the module outputs tuple"):
        strategy.extra_parameters(context)


def test_feature_weight_zero_equals_soft_labels_only_bit_for_bit(inputs, tmp_path):
    """Hooks, adapters and their optimizer group change nothing when the feature loss weighs 0. Distilling
    starts at epoch 1: adding the adapters' group then must keep the model's momentum."""
    weights, losses = {}, {}
    runs = {"soft": {}, "weight0": {"feature_weight": 0.0}, "weight1": {"feature_weight": 1.0}}
    for name, extra in runs.items():
        checkpoint = tmp_path / name
        features = {"feature_maps": FEATURE_MAPS} if extra else {}
        config = make_config(inputs, checkpoint, epochs=2, **features, **extra)
        config["strategies"]["distill"]["start_epoch"] = 1
        summary = Compressor(
            load_config(write_config(tmp_path / f"{name}.yaml", config)), progress=False
        ).run()
        weights[name] = load_checkpoint(checkpoint / "1")[0]["model"]
        losses[name] = [r["train_loss"] for r in read_jsonl(checkpoint / "metrics.jsonl")]
        events = [e for e in summary.events if e.get("strategy") == "distill"]
        assert [e["epoch"] for e in events] == [1] and ("feature_loss" in events[0]) == bool(extra)
    assert losses["soft"] == losses["weight0"]
    for key in weights["soft"]:
        assert torch.equal(weights["soft"][key], weights["weight0"][key]), key
    assert list(_adapters(tmp_path / "weight0" / "1")) == FEATURE_MAPS
    assert "strategies" not in load_checkpoint(tmp_path / "weight0" / "0")[0]  # not distilling yet
    assert any(not torch.equal(weights["soft"][k], weights["weight1"][k]) for k in weights["soft"])


@pytest.mark.usefixtures("one_thread")  # the killed run has one thread: bit-identical weights need the same
def test_feature_distilling_run_with_pruning_resumes_exactly(inputs, tmp_path):
    """3 epochs, pruning at 2: a run killed (SIGKILL) after its first checkpoint and resumed ends like an
    uninterrupted one (adapters and their momentum restored), and pruning gives the pruned layers' adapters
    fewer input channels."""
    config = make_config(inputs, None, prune_at=2, epochs=3, feature_maps=FEATURE_MAPS)
    paths = {}
    for name in ("straight", "killed"):
        config["compressor"]["checkpoint_path"] = str(tmp_path / name)
        paths[name] = write_config(tmp_path / f"{name}.yaml", config)
    straight = Compressor(load_config(paths["straight"]), progress=False).run()
    assert_killed(run_python(KILLER, str(paths["killed"])))
    assert sorted(p.name for p in (tmp_path / "killed").iterdir() if p.name.isdigit()) == ["0"]
    first = _adapters(tmp_path / "killed" / "0")
    assert [tuple(a.shape) for a in first.values()] == [(16, 16), (32, 32), (32, 32)]
    assert all(not torch.equal(a, torch.eye(len(a))) for a in first.values())  # the optimizer trains them
    resumed = Compressor(load_config(paths["killed"]), progress=False).run()

    assert resumed.resumed_from == str(tmp_path / "killed" / "0") and resumed.epochs_run == [1, 2]
    assert straight.epochs_run == [0, 1, 2]
    a, b = (load_checkpoint(tmp_path / name / "2")[0] for name in ("straight", "killed"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    adapters_a, adapters_b = a["strategies"]["distill"]["adapters"], b["strategies"]["distill"]["adapters"]
    assert all(torch.equal(adapters_a[k], adapters_b[k]) for k in FEATURE_MAPS)
    pruned = {k: tuple(v.shape) for k, v in adapters_a.items()}
    assert pruned["2"][0] == 16 and pruned["2"][1] < 16  # teacher channels x the pruned student's
    assert pruned["5"][0] == pruned["7"][0] == 32
    meta = json.loads((tmp_path / "straight" / "2" / "meta.json").read_text())
    assert set(meta["strategies"]["distill"]) == {"teacher_dir"}  # tensors are not in the JSON


DUMP_ADAPTERS = """
import os, sys
import torch
from torchslim.compress.strategies.distill import DistillationStrategy

original = DistillationStrategy.on_compression_end


def dump_then_end(self, context):
    adapters = {name: weight.detach().cpu() for name, weight in self.adapters.items()}
    torch.save(adapters, os.path.join(sys.argv[2], f"adapters{os.environ['RANK']}.pt"))
    original(self, context)


DistillationStrategy.on_compression_end = dump_then_end
from torchslim.cli.main import main

sys.exit(main(["compress", "--config", sys.argv[1], "--no-progress"]))
"""


def test_adapters_stay_identical_across_torchrun_ranks(inputs, tmp_path):
    """Adapters live outside the DDP-wrapped model: their gradients are averaged over the ranks too."""
    config = make_config(inputs, tmp_path / "ckpt", prune_at=1, epochs=2, feature_maps=FEATURE_MAPS)
    config["train"]["batch_size"] = 16  # 4 steps per rank and epoch, on different shards
    path = write_config(tmp_path / "ddp.yaml", config)
    script = tmp_path / "dump.py"
    script.write_text(textwrap.dedent(DUMP_ADAPTERS))
    result = torchrun(str(script), str(path), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"adapters{rank}.pt", weights_only=True) for rank in (0, 1))
    assert list(rank0) == FEATURE_MAPS
    assert rank0["2"].shape[1] < 16  # refitted after pruning, then trained
    for name in FEATURE_MAPS:
        assert torch.equal(rank0[name], rank1[name]), name
