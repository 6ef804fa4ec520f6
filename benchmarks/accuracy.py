"""P1, accuracy kept: Fashion-MNIST 32x32, -50% MACs, torchslim vs Torch-Pruning at the same fine-tune budget.

Every method prunes the same cached baseline (trained once, benchmarks/cache/)
to the same MACs target with the same alignment, then gets the same fine-tune
(epochs, LR, cosine schedule, seed, data order). Top-1 is measured right after
pruning, after each repair step (BN re-estimation, reconstruction) and after
every fine-tune epoch; each step is timed. Each tool prunes once; the methods
that share a start fine-tune deep copies of it. Methods:

* ``torchslim-l1``: ``torchslim.prune``, uniform, l1_norm (the plain criterion, as
  Torch-Pruning), fine-tuned as pruned.
* ``torchslim-l1+bn``: the same plan followed by batch-norm re-estimation on
  ``--bn-batches`` training batches (what torchslim's compressor does after
  pruning). It changes only running statistics, which fine-tuning (train mode,
  batch statistics) does not read and all but forgets (their weight in the
  running averages after one epoch of N batches is 0.9^N), so its fine-tuned
  model *is* ``torchslim-l1``'s: it is not fine-tuned again.
* ``torchslim-l1+bn+rec``: then ``torchslim.recovery.reconstruction.reconstruct`` on
  ``--rec-batches`` training batches: the layers that lost input channels are
  refitted by least squares to reproduce the unpruned baseline's outputs. No
  second BN re-estimation (reconstruction sets the refitted layers' BN means).
* ``torchslim-l1+bn+rec+kd``: the same start, fine-tuned distilled from the
  unpruned baseline (DistillationStrategy's soft-label loss, T=4, alpha=0.5).
* ``torchslim-<criterion>+bn+rec`` for each of ``--extra-criteria`` (default
  ``bn_scale``, which ranks channels by their batch-norm scale): the same
  pipeline with another of torchslim's criteria. ``--only-extra`` runs just
  these and adds them to the last full run's results.
* ``torchslim-latency-aware+bn+rec`` (``--latency-aware``): the channel counts
  of P2's latency-aware batch-1 plan (see :func:`latency_aware_prune`), with
  BN re-estimation and reconstruction: what the faster architecture costs in accuracy.
* ``torchslim-latency-scored+bn+rec`` (``--latency-scored``): latency-aware
  planning of this baseline itself at 224, weighing accuracy: among the
  profiled plans within 2% of the fastest, the one with the best top-1 after
  BN re-estimation on held-out training images (see :func:`latency_scored_prune`).
* ``torch-pruning-l1``: Torch-Pruning 1.6 MagnitudePruner (p=1), uniform
  ratio bisected to the MACs target, classifier ignored, fine-tuned as pruned.
* ``torch-pruning-l1+bn``: Torch-Pruning's model after the same BN
  re-estimation, for the "right after pruning" comparison; like
  ``torchslim-l1+bn`` its fine-tune is ``torch-pruning-l1``'s.
* ``torch-pruning-l1+kd``: Torch-Pruning's model fine-tuned with the same
  distillation loss.

BN re-estimation and reconstruction read the first batches of epoch 0's
training order, with the same augmentation, whatever ran before. Training runs with 1 PyTorch thread: on
this 2-core shared machine 2 threads were 4x slower (OpenMP barriers on
oversubscribed cores); accuracy does not depend on it.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from common import (
    Pruned,
    cached_baseline,
    fmnist_loaders,
    fresh_model,
    log,
    machine_info,
    macs,
    read_result,
    tp_prune,
    train_epochs,
    ts_prune,
    write_result,
)

from torchslim.criteria import data_criterion, prepare_data_criterion
from torchslim.latency.calibration import SCORE_SAMPLES

MODELS = ("mobilenet_v2", "resnet34")  # mobilenet_v1 works too
# The methods whose fine-tune is another's (BN statistics are not read by fine-tuning, see the docstring).
SAME_FINETUNE = {"torchslim-l1+bn": "torchslim-l1", "torch-pruning-l1+bn": "torch-pruning-l1"}
TEMPERATURE, ALPHA = 4.0, 0.5


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="zoo names, e.g. mobilenet_v1")
    parser.add_argument("--train-limit", type=int, default=20000, help="training slice (first N images)")
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
    parser.add_argument("--rec-batches", type=int, default=10, help="training batches for reconstruction")
    parser.add_argument(
        "--extra-criteria",
        nargs="*",
        default=["bn_scale"],
        help="more torchslim criteria, each as method torchslim-<criterion>+bn+rec",
    )
    parser.add_argument(
        "--latency-aware",
        action="store_true",
        help="add torchslim-latency-aware+bn+rec: the architecture P2 times as latency-aware b1",
    )
    parser.add_argument(
        "--latency-scored",
        action="store_true",
        help="add torchslim-latency-scored+bn+rec: latency-aware planning that weighs held-out top-1",
    )
    parser.add_argument(
        "--only-extra",
        action="store_true",
        help="run only the --extra-criteria methods and merge them into results/accuracy.json "
        "(same settings; the baselines are cached)",
    )
    return parser.parse_args(argv)


def evaluate_top1(model, data) -> float:
    from torchslim.engine import evaluate

    return evaluate(model, data.val_loader).top1


def _first_batches(data, seed: int) -> None:
    """Make the training loader yield epoch 0's first batches with the same augmentation, whatever ran before.

    The shuffle order depends on the sampler's epoch (fine-tuning leaves it at its last),
    the random crops on torch's global generator."""
    torch.manual_seed(seed)
    sampler = getattr(data.train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(0)


def _recalibrate(model, data, args) -> dict:
    """BN re-estimation in place; its seconds and the top-1 after it."""
    from torchslim.recovery.batch_norm import recalibrate_batch_norm

    _first_batches(data, args.seed)
    started = time.perf_counter()
    recalibrate_batch_norm(model, data.train_loader, num_batches=args.bn_batches)
    return {"bn_seconds": time.perf_counter() - started, "top1_after_bn": evaluate_top1(model, data)}


def _reconstruct(baseline, model, pruned, data, args) -> dict:
    """Reconstruction in place; its seconds, what it refitted and the top-1 after it."""
    from torchslim.recovery.reconstruction import reconstruct

    _first_batches(data, args.seed)
    started = time.perf_counter()
    report = reconstruct(
        baseline,
        model,
        data.train_loader,
        group_set=pruned.result.group_set,
        mask=pruned.result.plan.mask,
        num_batches=args.rec_batches,
        seed=args.seed,
    )
    seconds = time.perf_counter() - started
    return {
        "rec_seconds": seconds,
        "rec_batches": report.batches,
        "rec_layers": len(report.layers),
        "rec_refitted": sum(after < before for before, after in report.layers.values()),
        "rec_error_before": report.mean_error_before,
        "rec_error_after": report.mean_error_after,
        "rec_layer_errors": report.layers,
        "top1_after_rec": evaluate_top1(model, data),
    }


def prepare_methods(baseline, data, args, name: str) -> dict[str, tuple[dict, torch.nn.Module | None]]:
    """Each method's record up to fine-tuning and the model it fine-tunes (None: see SAME_FINETUNE).

    Each tool prunes once; the later steps work on deep copies, so every model is
    ready before any fine-tuning starts (fine-tuning changes its model in place).
    """
    methods: dict[str, tuple[dict, torch.nn.Module | None]] = {}
    for criterion in args.extra_criteria:
        candidate = copy.deepcopy(baseline)
        if (
            data_criterion(criterion) is not None
        ):  # taylor, activation_mean: scored on the first training batches
            _first_batches(data, args.seed)
            prepare_data_criterion(candidate, criterion, data.train_loader)
        other = ts_prune(candidate, 32, args.target, round_to=args.round_to, criterion=criterion)
        entry = {
            "macs_left": other.macs_left,
            "hit": other.hit,
            "prune_seconds": other.seconds,
            "top1_after_prune": evaluate_top1(other.model, data),
        }
        entry.update(_recalibrate(other.model, data, args))
        entry.update(_reconstruct(baseline, other.model, other, data, args))
        methods[f"torchslim-{criterion}+bn+rec"] = (entry, other.model)
    latency_methods = {
        "torchslim-latency-aware+bn+rec": args.latency_aware and latency_aware_prune,
        "torchslim-latency-scored+bn+rec": args.latency_scored and latency_scored_prune,
    }
    for method, planner in latency_methods.items():
        if not planner:
            continue
        aware = planner(baseline, name, args, data)
        calibration = aware.result.plan_info.calibration or {}
        entry = {
            "macs_left": aware.macs_left,
            "hit": aware.hit,
            "prune_seconds": aware.seconds,
            "latency_plan": {
                k: calibration.get(k)
                for k in ("chosen", "chosen_by", "measured_speedup", "scores", "profiles")
            },
            "top1_after_prune": evaluate_top1(aware.model, data),
        }
        entry.update(_recalibrate(aware.model, data, args))
        entry.update(_reconstruct(baseline, aware.model, aware, data, args))
        methods[method] = (entry, aware.model)
    if args.only_extra:
        return methods
    ts = ts_prune(copy.deepcopy(baseline), 32, args.target, round_to=args.round_to)
    start = {
        "macs_left": ts.macs_left,
        "hit": ts.hit,
        "prune_seconds": ts.seconds,
        "top1_after_prune": evaluate_top1(ts.model, data),
    }
    methods["torchslim-l1"] = (start, ts.model)
    repaired = copy.deepcopy(ts.model)
    bn = dict(start, **_recalibrate(repaired, data, args))
    methods["torchslim-l1+bn"] = (bn, None)
    # The +bn model is not fine-tuned: reconstruction continues from it.
    rec = dict(bn, **_reconstruct(baseline, repaired, ts, data, args))
    methods["torchslim-l1+bn+rec"] = (rec, repaired)
    methods["torchslim-l1+bn+rec+kd"] = (dict(rec), copy.deepcopy(repaired))

    tp_round = None if args.round_to <= 1 else args.round_to
    peer = tp_prune(copy.deepcopy(baseline), 32, args.target, round_to=tp_round)
    start = {
        "macs_left": peer.macs_left,
        "hit": peer.hit,
        "prune_seconds": peer.seconds,
        "tries": peer.tries,
        "ratio": peer.ratio,
        "top1_after_prune": evaluate_top1(peer.model, data),
    }
    methods["torch-pruning-l1"] = (start, peer.model)
    bn = dict(start, **_recalibrate(copy.deepcopy(peer.model), data, args))
    methods["torch-pruning-l1+bn"] = (bn, None)
    methods["torch-pruning-l1+kd"] = (dict(start), copy.deepcopy(peer.model))
    return methods


def latency_aware_prune(baseline, name: str, args, data=None) -> Pruned:
    """The architecture P2 times as "torchslim latency-aware b1", on this baseline.

    Channel counts come from latency-aware planning of the same model at 224
    (ONNX Runtime, batch 1, 2 threads), as benchmarks/latency.py plans it; where
    candidate plans measure within noise of each other the choice can differ run
    to run (the chosen candidate is recorded). Counts do not depend on the input
    size or the weights; which channels go is this baseline's own l1 ranking.
    Conv MACs scale alike at 32x32, so the MACs target still holds (``hit``).
    """
    import numpy as np

    from torchslim.latency.planner import LatencyOptions, LatencyPlanner
    from torchslim.pruning import prune
    from torchslim.pruning.plan import PlanBuilder
    from torchslim.pruning.prune import analyze, cut, rank_units

    planned = prune(
        fresh_model(name),
        torch.randn(1, 3, 224, 224),
        target_flops=args.target,
        planner=LatencyPlanner(LatencyOptions(runtime="onnxruntime", threads=2, batch_size=1)),
    )
    counts = {layer: after for layer, (_, after) in planned.report.channels.items()}
    model = copy.deepcopy(baseline)
    example = torch.randn(1, 3, 32, 32)
    started = time.perf_counter()
    group_set = analyze(model, example)
    scores = rank_units(group_set, model, "l1_norm")
    builder = PlanBuilder(group_set, {g: np.argsort(v, kind="stable") for g, v in scores.items()}, 1)
    plan = builder.build({g: counts.get(group_set.groups[g].sources[0], n) for g, n in builder.sizes.items()})
    result = cut(model, group_set, plan, example, inplace=True, verify=False, started=started)
    result.plan_info = planned.plan_info
    return Pruned(
        result.model,
        plan.macs_before,
        plan.macs_after,
        time.perf_counter() - started,
        hit=abs(plan.reduction - args.target) <= 0.01,
        result=result,
    )


def held_out_batches(train_limit: int, count: int = SCORE_SAMPLES) -> list:
    """Fashion-MNIST training images [train_limit, train_limit + count) as evaluation batches: neither
    fine-tuned on nor in the test slice, so choosing a plan on them leaks nothing into the table."""
    from torchslim.data.fashion_mnist import FASHION_MNIST_STATS
    from torchslim.data.loaders import build_datasets
    from torchslim.data.tensor_dataset import TensorImageDataset
    from torchslim.engine.cached import cache_batches

    train, _, _, _ = build_datasets("fashion-mnist", image_size=32)
    end = train_limit + count
    if end > len(train):
        raise ValueError(f"no {count} held-out training images after the first {train_limit}")
    held_out = TensorImageDataset(
        train.images[train_limit:end], train.labels[train_limit:end], FASHION_MNIST_STATS
    )
    return cache_batches(torch.utils.data.DataLoader(held_out, batch_size=256), None, "cpu")


def latency_scored_prune(baseline, name: str, args, data) -> Pruned:
    """Latency-aware planning of this baseline at 224 (ONNX Runtime, batch 1, 2 threads) with a plan score.

    As a user with data would run it (``torchslim prune --align latency --data``):
    the profiled plans within 2% of the fastest are each cut out of the baseline,
    BN-re-estimated as the ``+bn`` methods are, and scored by top-1 on held-out
    training images (:func:`held_out_batches`); the best one is kept.
    """
    from torchslim.engine.cached import top1_score
    from torchslim.latency.planner import LatencyOptions, LatencyPlanner
    from torchslim.pruning import prune
    from torchslim.recovery.batch_norm import recalibrate_batch_norm

    def recalibrate(candidate) -> None:
        _first_batches(data, args.seed)
        recalibrate_batch_norm(candidate, data.train_loader, num_batches=args.bn_batches)

    score = top1_score(held_out_batches(args.train_limit), recalibrate)

    started = time.perf_counter()
    planned = prune(
        copy.deepcopy(baseline),
        torch.randn(1, 3, 224, 224),
        target_flops=args.target,
        planner=LatencyPlanner(LatencyOptions(runtime="onnxruntime", threads=2, batch_size=1), score=score),
    )
    before, after = macs(baseline, 32), macs(planned.model, 32)
    log(
        f"{name}: latency-scored plan {planned.plan_info.calibration.get('chosen')} from scores "
        + ", ".join(f"{e['plan']} {e['score']:.2f}%" for e in planned.plan_info.calibration.get("scores", []))
    )
    return Pruned(
        planned.model,
        before,
        after,
        time.perf_counter() - started,
        hit=abs(1 - after / before - args.target) <= 0.01,
        result=planned,
    )


def _distillation_loss(teacher, temperature: float = TEMPERATURE, alpha: float = ALPHA):
    """The DistillationStrategy's soft-label loss with the unpruned baseline as teacher."""
    from torchslim.recovery.distillation import soft_label_loss

    teacher = copy.deepcopy(teacher).eval()

    def loss(outputs, targets, images):
        with torch.no_grad():
            teacher_outputs = teacher(images)
        return soft_label_loss(outputs, teacher_outputs, targets, temperature=temperature, alpha=alpha)

    return loss


def _describe(name: str, method: str, entry: dict) -> str:
    steps = [f"MACs left {entry['macs_left']:.2%}", f"after prune {entry['top1_after_prune']:.2f}%"]
    if "top1_after_bn" in entry:
        steps.append(f"after BN {entry['top1_after_bn']:.2f}%")
    if "top1_after_rec" in entry:
        steps.append(f"after reconstruction {entry['top1_after_rec']:.2f}% ({entry['rec_seconds']:.1f} s)")
    steps.append("fine-tune epochs " + " / ".join(f"{t:.2f}%" for t in entry["top1_per_epoch"]))
    return f"{name} {method}: " + ", ".join(steps)


def run_model(name: str, args) -> dict:
    data = fmnist_loaders(args.train_limit, args.val_limit, seed=args.seed)
    tag = f"n{args.train_limit}-e{args.baseline_epochs}-lr{args.baseline_lr}-s{args.seed}"
    started = time.perf_counter()
    baseline, record = cached_baseline(
        name, data, epochs=args.baseline_epochs, lr=args.baseline_lr, seed=args.seed, tag=tag
    )
    base_top1 = evaluate_top1(baseline, data)
    how = "cached" if time.perf_counter() - started < 60 else "trained"
    log(f"{name}: baseline top-1 {base_top1:.2f}% ({how})")
    result = {
        "baseline_top1": base_top1,
        "baseline": {k: v for k, v in record.items() if k != "history"},
        "macs": macs(baseline, 32),
        "methods": {},
    }
    methods = prepare_methods(baseline, data, args, name)
    for method, (entry, model) in methods.items():  # fine-tune in table order; shared runs come first
        if model is None:
            continue
        loss_fn = _distillation_loss(baseline) if method.endswith("+kd") else None
        started = time.perf_counter()
        history = train_epochs(
            model, data, epochs=args.finetune_epochs, lr=args.finetune_lr, seed=args.seed, loss_fn=loss_fn
        )
        entry["finetune_seconds"] = time.perf_counter() - started
        entry["finetune"] = "distilled (T=4, alpha=0.5)" if loss_fn else "cross-entropy"
        entry["top1_per_epoch"] = [h["top1"] for h in history]
        entry["top1_after_finetune"] = history[-1]["top1"]
        entry["drop_vs_baseline"] = base_top1 - entry["top1_after_finetune"]
        log(
            f"{name} {method}: fine-tuned in {entry['finetune_seconds']:.0f} s, top-1 per epoch "
            + " / ".join(f"{t:.2f}%" for t in entry["top1_per_epoch"])
        )
    for method, (entry, model) in methods.items():
        if model is None:
            done = methods[SAME_FINETUNE[method]][0]
            entry.update({k: done[k] for k in ("top1_per_epoch", "top1_after_finetune", "drop_vs_baseline")})
            entry["finetune"] = f"same as {SAME_FINETUNE[method]}"
        result["methods"][method] = entry
        log(_describe(name, method, entry))
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    payload = {
        "benchmark": "P1 accuracy",
        "machine": machine_info(args.threads),
        "settings": {k: v for k, v in vars(args).items() if k != "models"}
        | {"kd_temperature": TEMPERATURE, "kd_alpha": ALPHA},
        "data": f"Fashion-MNIST 32x32, train first {args.train_limit}, test first {args.val_limit}",
        "models": {},
    }
    earlier = read_result("accuracy") if args.only_extra else None
    spent_before = 0.0
    if earlier is not None:  # add the extra methods to the full run's tables
        payload, spent_before = earlier, earlier.get("seconds", 0.0)
        payload["extra_run_machine"] = machine_info(args.threads)
        payload["settings"]["extra_criteria"] = sorted(
            set(payload["settings"].get("extra_criteria", [])) | set(args.extra_criteria)
        )
    for name in args.models:
        result = run_model(name, args)
        if earlier is not None and name in earlier["models"]:
            earlier["models"][name]["methods"].update(result["methods"])
        else:
            payload["models"][name] = result
        payload["seconds"] = spent_before + time.perf_counter() - started
        write_result("accuracy", payload)
    log(f"P1 done in {time.perf_counter() - started:.0f} s")
    return payload


if __name__ == "__main__":
    main()
