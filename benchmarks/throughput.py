"""P4, fine-tune throughput: images/s of torchslim's training engine vs a bare PyTorch loop.

Same model, weights, batch size, data loader, optimizer and LR schedule. The
engine is :func:`torchslim.engine.train_one_epoch` called as the compressor
calls it (batch hooks of the strategies, loss check, accuracy counting); the
bare loop is forward, cross-entropy, zero_grad, backward, step, scheduler step.
Runs alternate (engine, bare, bare, engine, ...) after a warm-up; the goal is
judged on the median of the per-pair ratios (the ratio of the medians is also
reported; on a shared machine single runs vary by +-15%).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import fmnist_loaders, fresh_model, log, machine_info, write_result


class _NoOpHooks:
    """What the compressor passes when its strategies do nothing per batch."""

    def on_batch_begin(self, batch_index, images, targets) -> None:
        pass

    def on_batch_end(self, batch_index, loss) -> None:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_epoch(
    model, loader, optimizer, scheduler, max_batches: int, device: torch.device
) -> tuple[int, float]:
    model.train()
    seen = 0
    started = time.perf_counter()
    for i, (images, targets) in enumerate(loader):
        if i >= max_batches:
            break
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += len(images)
    _sync(device)
    return seen, time.perf_counter() - started


def engine_epoch(
    model, loader, optimizer, scheduler, max_batches: int, device: torch.device
) -> tuple[int, float]:
    from torchslim.engine import TrainOptions, train_one_epoch

    started = time.perf_counter()
    options = TrainOptions(device=device, hooks=_NoOpHooks(), progress=False, max_batches=max_batches)
    stats = train_one_epoch(model, loader, optimizer, options, scheduler=scheduler)
    _sync(device)
    return stats.images, time.perf_counter() - started


def run_model(name: str, args) -> dict:
    from torchslim.engine import build_lr_scheduler, build_optimizer

    data = fmnist_loaders(args.batch_size * args.batches, 256, batch_size=args.batch_size, seed=0)
    device = torch.device(args.device)
    model = fresh_model(name, num_classes=10).to(device)
    optimizer = build_optimizer(model, lr=0.01, momentum=0.9, l2_decay=5e-4)
    scheduler = build_lr_scheduler(
        optimizer, strategy="cosine_decay", epochs=1000, steps_per_epoch=args.batches
    )
    runners = {"engine": engine_epoch, "bare": bare_epoch}
    for runner in runners.values():  # warm-up
        runner(model, data.train_loader, optimizer, scheduler, 3, device)
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for label in order:
            images, seconds = runners[label](
                model, data.train_loader, optimizer, scheduler, args.batches, device
            )
            rates[label].append(images / seconds)
    ratios = [e / b for e, b in zip(rates["engine"], rates["bare"], strict=True)]
    result = {
        "engine_images_per_s": statistics.median(rates["engine"]),
        "bare_images_per_s": statistics.median(rates["bare"]),
        "ratio": statistics.median(rates["engine"]) / statistics.median(rates["bare"]),
        "paired_ratio_median": statistics.median(ratios),
        "engine_runs": rates["engine"],
        "bare_runs": rates["bare"],
    }
    log(
        f"{name}: engine {result['engine_images_per_s']:.1f} img/s, "
        f"bare {result['bare_images_per_s']:.1f} img/s, "
        f"ratio {result['ratio']:.3f} (paired {result['paired_ratio_median']:.3f})"
    )
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet34"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=12, help="batches per timed run")
    parser.add_argument("--rounds", type=int, default=10, help="timed runs of each loop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (on a GPU machine; report the card)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    payload = {
        "benchmark": "P4 throughput",
        "machine": machine_info(args.threads),
        "settings": {k: v for k, v in vars(args).items() if k != "models"},
        "data": "Fashion-MNIST 32x32 (in memory, random-crop augmentation), batch loader shared",
        "models": {},
    }
    for name in args.models:
        payload["models"][name] = run_model(name, args)
        write_result("throughput", payload)
    return payload


if __name__ == "__main__":
    main()
