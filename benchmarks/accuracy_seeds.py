"""P1 over fine-tune seeds: the same pruned starts as benchmarks/accuracy.py, fine-tuned with other seeds.

A top-1 on 5000 test images has a standard error of about 0.55 pt, and one
fine-tune seed adds its own spread, so a single run cannot separate methods
that end within a point of each other. This script takes each method's start
exactly as the main P1 run prepares it (same cached baseline, same pruning,
BN re-estimation and reconstruction on seed 0's first batches), then
fine-tunes it again with each of ``--seeds`` (training order and augmentation
change; the recipe and the test slice do not), and writes
``results/accuracy_seeds-<seeds>.json`` (one file per process). RESULTS.md reports the mean over these seeds
and the main run's seed 0. Run one process per seed to use both cores:

    python benchmarks/accuracy_seeds.py --models resnet34 --seeds 1 &
    python benchmarks/accuracy_seeds.py --models resnet34 --seeds 2
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from accuracy import parse_args as parse_main_args
from accuracy import prepare_methods
from common import cached_baseline, fmnist_loaders, log, machine_info, read_result, train_epochs, write_result

METHODS = (
    "torchslim-l1",
    "torchslim-l1+bn+rec",
    "torchslim-l1_group+bn+rec",
    "torchslim-taylor+bn+rec",
    "torch-pruning-l1",
)
# The starts accuracy.prepare_methods builds unless told only_extra (the others come from criteria/flags).
CORE_METHODS = {
    "torchslim-l1",
    "torchslim-l1+bn",
    "torchslim-l1+bn+rec",
    "torchslim-l1+bn+rec+kd",
    "torch-pruning-l1",
    "torch-pruning-l1+bn",
    "torch-pruning-l1+kd",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet34"])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2], help="fine-tune seeds (0 is the main run)"
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def run_model(name: str, args, settings) -> dict[str, dict[str, list[float]]]:
    """Method -> seed -> top-1 per fine-tune epoch."""
    data = fmnist_loaders(settings.train_limit, settings.val_limit, seed=settings.seed)
    tag = f"n{settings.train_limit}-e{settings.baseline_epochs}-lr{settings.baseline_lr}-s{settings.seed}"
    baseline, _ = cached_baseline(
        name, data, epochs=settings.baseline_epochs, lr=settings.baseline_lr, seed=settings.seed, tag=tag
    )
    settings.latency_aware = "torchslim-latency-aware+bn+rec" in args.methods
    criteria = {
        m.split("-")[1].split("+")[0]
        for m in args.methods
        if m.startswith("torchslim-") and "latency" not in m
    }
    settings.extra_criteria = sorted(criteria - {"l1"})
    settings.only_extra = not any(m in CORE_METHODS for m in args.methods)  # skip pruning starts nobody tunes
    prepared = prepare_methods(baseline, data, settings, name)
    missing = [m for m in args.methods if m not in prepared or prepared[m][1] is None]
    if missing:
        raise SystemExit(f"no fine-tuned start for method {missing[0]!r} (choose from {sorted(prepared)})")
    results: dict[str, dict[str, list[float]]] = {}
    for seed in args.seeds:
        seeded = fmnist_loaders(
            settings.train_limit, settings.val_limit, seed=seed
        )  # same test slice, new order
        for method in args.methods:
            model = copy.deepcopy(prepared[method][1])
            started = time.perf_counter()
            history = train_epochs(
                model, seeded, epochs=settings.finetune_epochs, lr=settings.finetune_lr, seed=seed
            )
            results.setdefault(method, {})[str(seed)] = [h["top1"] for h in history]
            log(
                f"{name} {method} seed {seed}: top-1 per epoch "
                + " / ".join(f"{h['top1']:.2f}%" for h in history)
                + f" ({time.perf_counter() - started:.0f} s)"
            )
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = parse_main_args([])  # the main P1 run's recipe, unchanged
    output = "accuracy_seeds-" + "-".join(str(s) for s in args.seeds)
    payload = read_result(output) or {"benchmark": "P1 over fine-tune seeds", "models": {}}
    payload["machine"] = machine_info(args.threads)
    for name in args.models:
        for method, by_seed in run_model(name, args, settings).items():
            payload["models"].setdefault(name, {}).setdefault(method, {}).update(by_seed)
        write_result(output, payload)
    return payload


if __name__ == "__main__":
    main()
