"""Layer reconstruction: its cost at 224x224 with the defaults, and the P1 accuracy it keeps.

Two parts, each written to ``results/reconstruction.json`` (``--part`` picks one):

* ``speed``: each seed model (ImageNet head, random init) is pruned to -50% MACs
  with ``torchslim.prune``'s defaults, then reconstructed with the defaults a
  ``torchslim compress`` run uses (``train.reconstruction_batches`` batches of the
  default ``batch_size``, Fashion-MNIST resized to 224x224, 3 channels), timed. In the
  same process one fine-tune epoch of 1,000 images at 224 is timed, so the cost also
  reads as a fraction of an epoch. The goal is at most ``GOAL_SECONDS`` per model.
* ``p1``: the P1 pipeline of ``accuracy.py`` (same cached baselines, settings and
  threads) up to reconstruction, for each criterion: prune, BN re-estimation,
  reconstruction, top-1 on the P1 test slice. It is compared with the
  ``top1_after_rec`` that ``results/accuracy.json`` recorded for the same method,
  whose ``top1_after_bn`` must match (the same starting point); the goal is to stay
  within ``GOAL_POINTS`` of it.
"""

from __future__ import annotations

import argparse
import copy
import time

import accuracy
import torch
from common import (
    cached_baseline,
    fmnist_loaders,
    fresh_model,
    log,
    machine_info,
    read_result,
    ts_prune,
    write_result,
)

from torchslim.config.schema import TrainConfig
from torchslim.data import build_loaders
from torchslim.engine import TrainOptions, build_optimizer, train_one_epoch
from torchslim.pruning.prune import prune
from torchslim.recovery.reconstruction import reconstruct

MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet34")
GOAL_SECONDS = 30.0
GOAL_POINTS = 0.5
EPOCH_IMAGES = 1000
EPOCH_BATCH = 64
CRITERIA = ("l1_norm", "l1_group", "bn_scale", "fpgm", "taylor")
RECORDED_METHOD = {"l1_norm": "torchslim-l1+bn+rec"}  # accuracy.json's name; others are <criterion>+bn+rec


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "p1", "both"), default="both")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), help="p1: the criteria to rerun")
    parser.add_argument(
        "--threads", type=int, default=2, help="speed: PyTorch threads (p1 uses accuracy.py's)"
    )
    parser.add_argument("--size", type=int, default=224, help="speed: input resolution")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- speed at 224


def _fmnist_at(size: int, batch_size: int, images: int):
    return build_loaders(
        "fashion-mnist",
        batch_size=batch_size,
        image_size=size,
        train_limit=images,
        val_limit=1,
        num_workers=0,
    )


def time_reconstruction(name: str, size: int) -> dict:
    """Prune with the defaults, reconstruct with a compress run's defaults; seconds and what it fitted."""
    defaults = TrainConfig()
    model = fresh_model(name, num_classes=1000)
    result = prune(copy.deepcopy(model), torch.randn(1, 3, size, size), target_flops=0.5)
    batches = defaults.reconstruction_batches
    data = _fmnist_at(size, defaults.batch_size, batches * defaults.batch_size)
    cpu = time.process_time()
    report = reconstruct(
        model, result.model, data.train_loader, group_set=result.group_set, mask=result.plan.mask
    )
    return {
        "seconds": report.seconds,
        "cpu_seconds": time.process_time() - cpu,
        "images": report.images,
        "batches_drawn": report.batches,
        "batch_size": defaults.batch_size,
        "reconstruction_batches": batches,
        "layers": len(report.layers),
        "error_before": report.mean_error_before,
        "error_after": report.mean_error_after,
        "macs_left": result.report.macs_after / result.report.macs_before,
    }


def time_epoch(name: str, size: int) -> float:
    """Seconds of one fine-tune epoch over ``EPOCH_IMAGES`` images at ``size`` (SGD, the engine's loop)."""
    model = fresh_model(name, num_classes=10).train()
    data = _fmnist_at(size, EPOCH_BATCH, EPOCH_IMAGES)
    optimizer = build_optimizer(model, lr=0.01, momentum=0.9, l2_decay=5e-4)
    started = time.perf_counter()
    train_one_epoch(model, data.train_loader, optimizer, TrainOptions(progress=False))
    return time.perf_counter() - started


def speed(args) -> dict:
    torch.set_num_threads(args.threads)
    rows = {}
    for name in args.models:
        rows[name] = time_reconstruction(name, args.size)
        rows[name]["epoch_seconds"] = time_epoch(name, args.size)
        rows[name]["met"] = rows[name]["seconds"] <= GOAL_SECONDS
        log(
            f"{name} at {args.size}: reconstruction {rows[name]['seconds']:.1f} s on {rows[name]['images']} "
            f"images, one {EPOCH_IMAGES}-image epoch {rows[name]['epoch_seconds']:.1f} s"
        )
    return {"size": args.size, "threads": args.threads, "goal_seconds": GOAL_SECONDS, "models": rows}


# --------------------------------------------------------------------------- P1 accuracy kept


def _recorded(name: str, criterion: str) -> dict | None:
    method = RECORDED_METHOD.get(criterion, f"torchslim-{criterion}+bn+rec")
    recorded = read_result("accuracy") or {}
    return recorded.get("models", {}).get(name, {}).get("methods", {}).get(method)


def p1_model(name: str, p1_args, criteria: list[str]) -> dict:
    data = fmnist_loaders(p1_args.train_limit, p1_args.val_limit, seed=p1_args.seed)
    tag = f"n{p1_args.train_limit}-e{p1_args.baseline_epochs}-lr{p1_args.baseline_lr}-s{p1_args.seed}"
    baseline, _ = cached_baseline(
        name, data, epochs=p1_args.baseline_epochs, lr=p1_args.baseline_lr, seed=p1_args.seed, tag=tag
    )
    rows = {}
    for criterion in criteria:
        candidate = copy.deepcopy(baseline)
        if accuracy.data_criterion(criterion) is not None:
            accuracy._first_batches(data, p1_args.seed)
            accuracy.prepare_data_criterion(candidate, criterion, data.train_loader)
        pruned = ts_prune(candidate, 32, p1_args.target, round_to=p1_args.round_to, criterion=criterion)
        entry = accuracy._recalibrate(pruned.model, data, p1_args)
        entry.update(accuracy._reconstruct(baseline, pruned.model, pruned, data, p1_args))
        entry.pop("rec_layer_errors", None)
        recorded = _recorded(name, criterion) or {}
        entry["recorded_top1_after_bn"] = recorded.get("top1_after_bn")
        entry["recorded_top1_after_rec"] = recorded.get("top1_after_rec")
        entry["recorded_rec_seconds"] = recorded.get("rec_seconds")
        rows[criterion] = entry
        log(
            f"{name} {criterion}: after BN {entry['top1_after_bn']:.2f} (recorded "
            f"{entry['recorded_top1_after_bn']}), after reconstruction {entry['top1_after_rec']:.2f} "
            f"(recorded {entry['recorded_top1_after_rec']}) in {entry['rec_seconds']:.1f} s"
        )
    return rows


def p1(args) -> dict:
    p1_args = accuracy.parse_args([])
    torch.set_num_threads(p1_args.threads)
    models = {name: p1_model(name, p1_args, args.criteria) for name in args.models}
    settings = {k: getattr(p1_args, k) for k in ("train_limit", "val_limit", "target", "round_to", "seed")}
    return {"goal_points": GOAL_POINTS, "settings": settings, "models": models}


def main(argv=None) -> dict:
    args = parse_args(argv)
    payload = read_result("reconstruction") or {"benchmark": "reconstruction"}
    if args.part in ("speed", "both"):
        payload["speed"] = dict(speed(args), machine=machine_info(args.threads))
        write_result("reconstruction", payload)
    if args.part in ("p1", "both"):
        payload["p1"] = dict(p1(args), machine=machine_info(1))
        write_result("reconstruction", payload)
    return payload


if __name__ == "__main__":
    main()
