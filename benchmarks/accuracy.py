"""P1, accuracy kept: Fashion-MNIST 32x32, -50% MACs, torchslim vs Torch-Pruning at the same fine-tune budget.

Every method prunes the same cached baseline (trained once, benchmarks/cache/)
to the same MACs target with the same alignment, then gets the same fine-tune
(epochs, LR, cosine schedule, seed, data order). Top-1 is measured right after
pruning and after fine-tuning. Methods:

* ``torchslim-l1``: ``torchslim.prune``, uniform, l1_norm (the plain criterion, as Torch-Pruning).
* ``torchslim-l1+bn``: the same plan followed by batch-norm re-estimation on 20
  training batches, which is what torchslim's compressor does after pruning.
  It changes only running statistics, which fine-tuning (train mode, batch
  statistics) neither reads nor keeps, so its fine-tuned model *is*
  ``torchslim-l1``'s: it is not fine-tuned again.
* ``torchslim-l1+bn+kd``: torchslim's best pipeline: the same plan, BN
  re-estimation, and fine-tuning distilled from the unpruned baseline
  (DistillationStrategy's soft-label loss, T=4, alpha=0.5); same epochs, LR and seed.
* ``torch-pruning-l1``: Torch-Pruning 1.6 MagnitudePruner (p=1), uniform
  ratio bisected to the MACs target, classifier ignored.

Training runs with 1 PyTorch thread: on this 2-core shared machine 2 threads
were 4x slower (OpenMP barriers on oversubscribed cores); accuracy does not
depend on it.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from common import (
    cached_baseline,
    fmnist_loaders,
    log,
    machine_info,
    macs,
    tp_prune,
    train_epochs,
    ts_prune,
    write_result,
)

MODELS = ("mobilenet_v2", "resnet34")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--train-limit", type=int, default=8000, help="training slice (first N images)")
    parser.add_argument("--val-limit", type=int, default=5000, help="test slice (first N test images)")
    parser.add_argument("--baseline-epochs", type=int, default=3)
    parser.add_argument("--baseline-lr", type=float, default=0.05)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=1, help="alignment for both tools (1: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bn-batches", type=int, default=20)
    return parser.parse_args(argv)


def evaluate_top1(model, data) -> float:
    from torchslim.engine import evaluate

    return evaluate(model, data.val_loader).top1


def prune_methods(name: str, baseline, args) -> dict[str, dict]:
    """Each method's pruned model (before fine-tuning) and what pruning cost."""
    methods = {}
    pruned = ts_prune(copy.deepcopy(baseline), 32, args.target, round_to=args.round_to)
    methods["torchslim-l1"] = {"model": pruned.model, "macs_left": pruned.macs_left, "hit": pruned.hit,
                               "prune_seconds": pruned.seconds}  # fmt: skip
    methods["torchslim-l1+bn"] = dict(methods["torchslim-l1"], model=copy.deepcopy(pruned.model))
    methods["torchslim-l1+bn+kd"] = dict(methods["torchslim-l1"], model=copy.deepcopy(pruned.model))
    tp_round = None if args.round_to <= 1 else args.round_to
    peer = tp_prune(copy.deepcopy(baseline), 32, args.target, round_to=tp_round)
    methods["torch-pruning-l1"] = {"model": peer.model, "macs_left": peer.macs_left, "hit": peer.hit,
                                   "prune_seconds": peer.seconds, "tries": peer.tries}  # fmt: skip
    return methods


def _distillation_loss(teacher, temperature: float = 4.0, alpha: float = 0.5):
    """The DistillationStrategy's soft-label loss with the unpruned baseline as teacher."""
    from torchslim.strategies.distill import soft_label_loss

    teacher = copy.deepcopy(teacher).eval()

    def loss(outputs, targets, images):
        with torch.no_grad():
            teacher_outputs = teacher(images)
        return soft_label_loss(outputs, teacher_outputs, targets, temperature=temperature, alpha=alpha)

    return loss


def run_model(name: str, args) -> dict:
    from torchslim.bn_recalibration import recalibrate_batch_norm

    data = fmnist_loaders(args.train_limit, args.val_limit, seed=args.seed)
    tag = f"n{args.train_limit}-e{args.baseline_epochs}-lr{args.baseline_lr}-s{args.seed}"
    started = time.perf_counter()
    baseline, record = cached_baseline(name, data, epochs=args.baseline_epochs, lr=args.baseline_lr,
                                       seed=args.seed, tag=tag)  # fmt: skip
    base_top1 = evaluate_top1(baseline, data)
    log(f"{name}: baseline top-1 {base_top1:.2f}% ({'cached' if time.perf_counter() - started < 60 else 'trained'})")
    result = {"baseline_top1": base_top1, "baseline": {k: v for k, v in record.items() if k != "history"},
              "macs": macs(baseline, 32), "methods": {}}  # fmt: skip
    for method, entry in prune_methods(name, baseline, args).items():
        model = entry.pop("model")
        entry["top1_after_prune"] = evaluate_top1(model, data)
        if "+bn" in method:
            recalibrate_batch_norm(model, data.train_loader, num_batches=args.bn_batches)
            entry["top1_after_bn"] = evaluate_top1(model, data)
        if method == "torchslim-l1+bn":  # fine-tuning never reads the re-estimated statistics: same run as -l1
            done = result["methods"]["torchslim-l1"]
            entry.update({k: done[k] for k in ("top1_per_epoch", "top1_after_finetune", "drop_vs_baseline")})
            entry["finetune"] = "same as torchslim-l1"
            result["methods"][method] = entry
            continue
        loss_fn = _distillation_loss(baseline) if method.endswith("+kd") else None
        history = train_epochs(model, data, epochs=args.finetune_epochs, lr=args.finetune_lr, seed=args.seed,
                               loss_fn=loss_fn)  # fmt: skip
        entry["top1_per_epoch"] = [h["top1"] for h in history]
        entry["top1_after_finetune"] = history[-1]["top1"]
        entry["drop_vs_baseline"] = base_top1 - entry["top1_after_finetune"]
        result["methods"][method] = entry
        log(f"{name} {method}: MACs left {entry['macs_left']:.2%}, top-1 after prune {entry['top1_after_prune']:.2f}%"
            + (f", after BN {entry['top1_after_bn']:.2f}%" if "top1_after_bn" in entry else "")
            + f", after {args.finetune_epochs} fine-tune epochs {entry['top1_after_finetune']:.2f}%")  # fmt: skip
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    payload = {
        "benchmark": "P1 accuracy",
        "machine": machine_info(args.threads),
        "settings": {k: v for k, v in vars(args).items() if k != "models"},
        "data": f"Fashion-MNIST 32x32, train first {args.train_limit}, test first {args.val_limit}",
        "models": {},
    }
    for name in args.models:
        payload["models"][name] = run_model(name, args)
        payload["seconds"] = time.perf_counter() - started
        write_result("accuracy", payload)
    log(f"P1 done in {time.perf_counter() - started:.0f} s")
    return payload


if __name__ == "__main__":
    main()
