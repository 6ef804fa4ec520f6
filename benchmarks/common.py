"""Helpers shared by the benchmark scripts: machine info, results files, pruning with both tools, data.

Torch-Pruning is a bench-only dependency (``pip install torch-pruning==1.6.1``,
the ``bench`` extra); it is imported here, never from ``torchslim``.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.models import build_model
from torchslim.pruning.counting import profile_model

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"  # where write_result / read_result go; see use_results_dir
CACHE = ROOT / "cache"
TOLERANCE = 0.01  # "within 1%" of the MACs target: |reduction - target| <= 0.01


# --------------------------------------------------------------------------- machine and results


def machine_info(threads: int | None = None) -> dict[str, Any]:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_pruning": torch_pruning_version(),
        "threads": threads,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def torch_pruning_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("torch-pruning")
    except Exception:
        return None


def use_results_dir(path: Path) -> None:
    """Send this process's results to ``path`` instead (a smoke run must not overwrite the real results)."""
    global RESULTS
    RESULTS = path


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def measure_each_model(
    payload: dict[str, Any], names, measure, output: str, threads: int, prefix: str
) -> dict:
    """``payload["models"][name] = measure(name, workdir)`` for each model, in one temporary folder,
    the results file rewritten after every model (a stopped run keeps the models it finished)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        for name in names:
            payload["models"][name] = measure(name, workdir)
            payload["seconds"] = time.perf_counter() - started
            payload["machine_after"] = machine_info(threads)
            write_result(output, payload)
    return payload


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- pruning with both tools


@dataclass
class Pruned:
    model: nn.Module
    macs_before: int
    macs_after: int
    seconds: float
    tries: int = 1
    hit: bool = True  # within TOLERANCE of the target
    ratio: float | None = None  # Torch-Pruning's pruning_ratio
    result: Any = None  # torchslim's PruneResult (group_set and plan, which reconstruction needs)

    @property
    def macs_left(self) -> float:
        return self.macs_after / self.macs_before

    @property
    def reduction(self) -> float:
        return 1.0 - self.macs_left


def macs(model: nn.Module, input_size: int) -> int:
    return profile_model(model, input_size).macs


def ts_prune(
    model: nn.Module,
    input_size: int,
    target: float,
    *,
    round_to: int = 16,
    criterion: str = "l1_norm",
    **kwargs: Any,
) -> Pruned:
    """torchslim: trace, score, plan to the MACs target, cut (timed from the built model)."""
    from torchslim.pruning.prune import prune

    example = torch.randn(1, 3, input_size, input_size)
    started = time.perf_counter()
    result = prune(model, example, target_flops=target, criterion=criterion, round_to=round_to, **kwargs)
    seconds = time.perf_counter() - started
    report = result.report
    return Pruned(
        result.model,
        report.macs_before,
        report.macs_after,
        seconds,
        hit=abs(report.flops_reduction - target) <= TOLERANCE,
        result=result,
    )


def _classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The final Linear layer(s): Torch-Pruning must not prune the logits."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def tp_prune_once(
    model: nn.Module,
    example: torch.Tensor,
    ratio: float,
    round_to: int | None,
    importance: Any = None,
    ignored=None,
) -> nn.Module:
    """Torch-Pruning 1.6, one uniform channel ratio, classifier ignored; prunes ``model``. ``importance``:
    a Torch-Pruning importance (default L1 magnitude, ``MagnitudeImportance(p=1)``); ``ignored(model)``
    names the layers to leave alone (default: the last Linear)."""
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=importance if importance is not None else tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        round_to=round_to,
        ignored_layers=(ignored or _classifier_layers)(model),
    )
    pruner.step()
    return model


def tp_prune(
    model: nn.Module,
    input_size: int,
    target: float,
    *,
    round_to: int | None = None,
    max_tries: int = 14,
    ignored=None,
) -> Pruned:
    """Torch-Pruning bisected on its pruning ratio until MACs drop by ``target`` within 1%.

    Every try rebuilds Torch-Pruning's dependency graph on a fresh copy (that is
    how its API works). When alignment makes the target unreachable the closest
    try is returned with ``hit=False``. The time counts everything from the built
    model to the returned pruned model, MAC counting included (as torchslim's does).
    """
    example = torch.randn(1, 3, input_size, input_size)
    started = time.perf_counter()
    before = macs(model, input_size)
    low, high = 0.0, 0.95
    best: tuple[float, nn.Module, int, float] | None = None
    tries = 0
    while tries < max_tries:
        ratio = (low + high) / 2
        candidate = tp_prune_once(copy.deepcopy(model), example, ratio, round_to, ignored=ignored)
        after = macs(candidate, input_size)
        tries += 1
        reduction = 1.0 - after / before
        if best is None or abs(reduction - target) < abs(best[0] - target):
            best = (reduction, candidate, after, ratio)
        if abs(reduction - target) <= TOLERANCE / 4:
            break
        if reduction < target:
            low = ratio
        else:
            high = ratio
    seconds = time.perf_counter() - started
    reduction, pruned, after, ratio = best
    return Pruned(
        pruned, before, after, seconds, tries, hit=abs(reduction - target) <= TOLERANCE, ratio=ratio
    )


def tp_prune_cached(
    name: str, model: nn.Module, input_size: int, target: float, round_to: int | None
) -> Pruned:
    """:func:`tp_prune`, with the ratio its bisection found cached in benchmarks/cache/ (bisection is
    slow)."""
    path = CACHE / "torch_pruning_ratios.json"
    key = f"{name}|{input_size}|{target}|{round_to}|{torch_pruning_version()}"
    known = json.loads(path.read_text()) if path.is_file() else {}
    if key in known:
        started = time.perf_counter()
        before = macs(model, input_size)
        pruned = tp_prune_once(
            copy.deepcopy(model), torch.randn(1, 3, input_size, input_size), known[key], round_to
        )
        after = macs(pruned, input_size)
        return Pruned(
            pruned,
            before,
            after,
            time.perf_counter() - started,
            hit=abs(1 - after / before - target) <= TOLERANCE,
            ratio=known[key],
        )
    result = tp_prune(model, input_size, target, round_to=round_to)
    _cache_ratio(path, key, result.ratio)
    return result


def _cache_ratio(path: Path, key: str, ratio: float) -> None:
    """Add ``key`` to the ratio cache, re-read just before writing and replaced whole, so that benchmark
    processes running side by side never read a half-written file or drop each other's ratios."""
    path.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(path.read_text()) if path.is_file() else {}
    known[key] = ratio
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(known, indent=1))
    temporary.replace(path)


def fresh_model(name: str, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, num_classes=num_classes).eval()


# --------------------------------------------------------------------------- Fashion-MNIST


FMNIST_SPEC = "fashion-mnist"
TRAIN_IMAGES = 60000  # Fashion-MNIST's training set


def fmnist_loaders(train_limit: int | None, val_limit: int | None, batch_size: int = 128, seed: int = 0):
    from torchslim.data import build_loaders

    return build_loaders(
        FMNIST_SPEC,
        batch_size=batch_size,
        image_size=32,
        train_limit=train_limit,
        val_limit=val_limit,
        num_workers=0,
        seed=seed,
    )


def fmnist_validation_loader(images: int) -> torch.utils.data.DataLoader:
    """The last ``images`` Fashion-MNIST training images, unaugmented: a validation split for choosing
    methods, never trained on while the training slice (``train_limit``) ends before it."""
    from torchslim.data.fashion_mnist import FASHION_MNIST_STATS
    from torchslim.data.loaders import build_datasets
    from torchslim.data.tensor_dataset import TensorImageDataset

    train, _, _, _ = build_datasets(FMNIST_SPEC, image_size=32)
    start = len(train) - images
    held_out = TensorImageDataset(train.images[start:], train.labels[start:], FASHION_MNIST_STATS)
    return torch.utils.data.DataLoader(held_out, batch_size=256)


def train_epochs(
    model: nn.Module,
    data,
    *,
    epochs: int,
    lr: float,
    seed: int,
    weight_decay: float = 5e-4,
    progress: bool = False,
    loss_fn=None,
) -> list[dict[str, float]]:
    """SGD + momentum, cosine LR per batch over ``epochs``, with the engine's train/evaluate loops.

    ``loss_fn(outputs, targets, images)`` replaces cross-entropy (distillation)."""
    from torchslim.engine import TrainOptions, build_lr_scheduler, build_optimizer, evaluate, train_one_epoch

    torch.manual_seed(seed)
    optimizer = build_optimizer(model, lr=lr, momentum=0.9, l2_decay=weight_decay)
    scheduler = build_lr_scheduler(
        optimizer, strategy="cosine_decay", epochs=epochs, steps_per_epoch=len(data.train_loader)
    )
    history = []
    for epoch in range(epochs):
        options = TrainOptions(progress=progress, loss_fn=loss_fn)
        stats = train_one_epoch(
            model, data.train_loader, optimizer, options, scheduler=scheduler, epoch=epoch
        )
        result = evaluate(model, data.val_loader)
        history.append(
            {
                "epoch": epoch,
                "train_loss": stats.loss,
                "top1": result.top1,
                "top5": result.top5,
                "images_per_s": stats.images_per_s,
            }
        )
    return history


def cached_baseline(
    name: str, data, *, epochs: int, lr: float, seed: int, tag: str
) -> tuple[nn.Module, dict]:
    """The Fashion-MNIST baseline of ``name``: trained once, then loaded from benchmarks/cache/."""
    from torchslim.engine import evaluate
    from torchslim.models import load_model, save_model

    directory = CACHE / f"fmnist-{name}-{tag}"
    if (directory / "manifest.json").is_file():
        model, manifest = load_model(directory)
        return model, manifest.get("baseline", {})
    model = fresh_model(name, num_classes=10, seed=seed)
    started = time.perf_counter()
    history = train_epochs(model, data, epochs=epochs, lr=lr, seed=seed)
    result = evaluate(model, data.val_loader)
    record = {
        "epochs": epochs,
        "lr": lr,
        "seed": seed,
        "top1": result.top1,
        "top5": result.top5,
        "seconds": time.perf_counter() - started,
        "history": history,
    }
    save_model(directory, model, name, {"num_classes": 10}, input_size=32, extra={"baseline": record})
    return model.eval(), record
