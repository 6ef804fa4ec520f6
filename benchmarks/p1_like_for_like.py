"""P1 like for like: torchslim against Torch-Pruning with equivalent methods and one recipe, over seeds.

Fashion-MNIST at 32x32, -50% MACs (``--target``). Every method prunes the same cached baseline with the
same alignment (``--round-to`` for both tools) and gets the same fine-tune (epochs, LR, cosine schedule,
seed). Methods, each a *unit* cached on its own:

* pairs of equivalent methods, one unit per tool: torchslim ``l1_group`` against Torch-Pruning's
  ``MagnitudeImportance(p=1)`` (L1 over the whole coupled group; TP takes the group mean, torchslim the
  sum: the same ranking), ``taylor`` against ``TaylorImportance``, ``bn_scale`` against
  ``BNScaleImportance``, and torchslim's default criterion (``torchslim.prune``'s) against its closest
  Torch-Pruning match (:data:`TP_EQUIVALENT`);
* each tool's default: torchslim's default criterion with its default recovery (BN re-estimation, then
  reconstruction, as ``torchslim compress`` does), and Torch-Pruning's default importance
  (``MagnitudeImportance()``: L2, group mean);
* every unit is measured with and without BN re-estimation (Torch-Pruning's model gets torchslim's, as
  its user could): right after pruning and after re-estimation. Fine-tuning reads batch statistics only
  and all but forgets the running ones, so both start the same fine-tune, run once from the
  re-estimated model;
* ``control``: the unpruned baseline fine-tuned with the same recipe: what the budget alone buys.

The baseline trains at a constant LR until an epoch gains less than ``--plateau`` points of validation
top-1 (cached per epoch in benchmarks/cache/, so it resumes). Each seed (``--seeds``) changes the
training order, hence the pruning batches (data criteria, BN re-estimation, reconstruction) and the
fine-tune shuffling. Validation: the last ``--val-images`` training images, never trained on; the
best method is chosen there. Reported: top-1 on the full 10,000-image test set.

Results are cached per (model, unit, seed) in benchmarks/results/p1_like_for_like-<model>.json, written
after every unit: a run stopped anywhere resumes where it stopped, and models can run in parallel
processes. ``--smoke`` is a tiny run into a temporary results folder.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import common
import torch
from common import CACHE, fmnist_loaders, fresh_model, log, machine_info, macs, train_epochs, ts_prune
from torch import nn

import torchslim
from torchslim.criteria import data_criterion, prepare_data_criterion
from torchslim.criteria.data_driven import DEFAULT_BATCHES

MODELS = ("mobilenet_v2", "resnet34", "mobilenet_v1")
PAIRS = ("l1_group", "taylor", "bn_scale")
TP_EQUIVALENT = {"l1_group": "group-l1", "taylor": "taylor", "bn_scale": "bn-scale", "l1_norm": "l1-first"}
TP_DEFAULT = "default"


def tp_importance(name: str):
    """Torch-Pruning 1.6's importance called ``name`` here (``l1-first``: the L1 of the group's first
    layer, the pruned conv's own filters, as torchslim's ``l1_norm``)."""
    import torch_pruning as tp

    return {
        "default": lambda: tp.importance.MagnitudeImportance(),
        "group-l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l1-first": lambda: tp.importance.MagnitudeImportance(p=1, group_reduction="first"),
        "taylor": lambda: tp.importance.TaylorImportance(),
        "bn-scale": lambda: tp.importance.BNScaleImportance(),
    }[name]()


def torchslim_default_criterion() -> str:
    return inspect.signature(torchslim.prune).parameters["criterion"].default


@dataclass(frozen=True)
class Unit:
    """One cached measurement: a tool's method, pruned, re-estimated, maybe reconstructed, fine-tuned."""

    tool: str  # torchslim | torch-pruning | control
    method: str = ""  # torchslim criterion or Torch-Pruning importance name
    reconstruct: bool = False

    @property
    def key(self) -> str:
        if self.tool == "control":
            return "control"
        return f"{self.tool}:{self.method}" + ("+rec" if self.reconstruct else "")


def units_for(pairs: list[str], reconstruct_all: bool = True) -> list[Unit]:
    """The units of a run: both tools' defaults, each pair's two, torchslim's reconstruction rows (its
    default criterion's, or every criterion's with ``reconstruct_all``: the choice of a default needs
    them), the control."""
    default = torchslim_default_criterion()
    criteria = list(dict.fromkeys([default, *pairs]))
    found = [Unit("control"), Unit("torchslim", default, True), Unit("torch-pruning", TP_DEFAULT)]
    for criterion in criteria:
        found += [Unit("torchslim", criterion), Unit("torch-pruning", TP_EQUIVALENT[criterion])]
    found += [Unit("torchslim", criterion, True) for criterion in criteria if reconstruct_all]
    return list(dict.fromkeys(found))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=sorted(TP_EQUIVALENT))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--reconstruct-all",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a reconstruction row for every torchslim criterion (default), or only for the default's",
    )
    parser.add_argument("--train-limit", type=int, default=20000, help="first N training images")
    parser.add_argument("--val-images", type=int, default=5000, help="last N training images: validation")
    parser.add_argument("--test-limit", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--baseline-lr", type=float, default=0.05)
    parser.add_argument("--plateau", type=float, default=0.2, help="stop when an epoch gains less (pt)")
    parser.add_argument("--baseline-min-epochs", type=int, default=3)
    parser.add_argument("--baseline-max-epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=1, help="alignment for both tools (1: none)")
    parser.add_argument("--bn-batches", type=int, default=20)
    parser.add_argument("--rec-batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny run into a temporary results folder")
    parser.add_argument("--results-dir", type=Path, default=None, help="results (and, smoke: cache) here")
    args = parser.parse_args(argv)
    if args.train_limit + args.val_images > common.TRAIN_IMAGES:
        parser.error(f"--train-limit + --val-images must be at most {common.TRAIN_IMAGES}")
    return args


SMOKE = {
    "models": ["mobilenet_v1"],
    "pairs": ["l1_group"],
    "seeds": [0],
    "train_limit": 256,
    "val_images": 128,
    "test_limit": 256,
    "baseline_min_epochs": 1,
    "baseline_max_epochs": 2,
    "finetune_epochs": 1,
    "bn_batches": 2,
    "rec_batches": 2,
    "batch_size": 64,
}
RECIPE = ("train_limit", "val_images", "test_limit", "baseline_lr", "plateau", "baseline_min_epochs")
RECIPE += ("baseline_max_epochs", "finetune_epochs", "finetune_lr", "target", "round_to", "bn_batches")
RECIPE += ("rec_batches", "batch_size")


# --------------------------------------------------------------------------- data


def loaders(args, seed: int, validation) -> SimpleNamespace:
    """Training order from ``seed``; ``val_loader`` is the validation split (what training evaluates on),
    ``test_loader`` the test set."""
    data = fmnist_loaders(args.train_limit, args.test_limit, batch_size=args.batch_size, seed=seed)
    return SimpleNamespace(train_loader=data.train_loader, val_loader=validation, test_loader=data.val_loader)


def top1(model: nn.Module, loader) -> float:
    from torchslim.engine import evaluate

    return evaluate(model, loader).top1


def first_batches(data, seed: int) -> None:
    """The training loader yields epoch 0's first batches of ``seed``'s order, with the same augmentation."""
    torch.manual_seed(seed)
    sampler = getattr(data.train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(0)


# --------------------------------------------------------------------------- baseline


def plateau_baseline(name: str, args, data) -> tuple[nn.Module, dict]:
    """``name`` trained at a constant LR until an epoch gains less than ``--plateau`` pt of validation
    top-1 (or ``--baseline-max-epochs``); every epoch is saved, so training resumes where it stopped."""
    from torchslim.engine import TrainOptions, build_optimizer, train_one_epoch

    tag = f"n{args.train_limit}-v{args.val_images}-lr{args.baseline_lr}-p{args.plateau}-b{args.batch_size}"
    directory = CACHE / f"p1-plateau-{name}-{tag}"
    model = fresh_model(name, num_classes=10, seed=0)
    optimizer = build_optimizer(model, lr=args.baseline_lr, momentum=0.9, l2_decay=5e-4)
    history: list[float] = []
    if (directory / "state.pt").is_file():
        state = torch.load(directory / "state.pt", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = json.loads((directory / "history.json").read_text())
    while not _plateaued(history, args):
        torch.manual_seed(len(history))  # this epoch's augmentation, the same when resumed
        train_one_epoch(model, data.train_loader, optimizer, TrainOptions(progress=False), epoch=len(history))
        history.append(top1(model, data.val_loader))
        log(f"{name} baseline epoch {len(history)}: validation top-1 {history[-1]:.2f}%")
        _save_epoch(directory, model, optimizer, history)
    record = {"epochs": len(history), "val_top1_per_epoch": history, "plateau": _gain(history) < args.plateau}
    return model.eval(), record


def _gain(history: list[float]) -> float:
    return history[-1] - history[-2] if len(history) > 1 else float("inf")


def _plateaued(history: list[float], args) -> bool:
    if len(history) >= args.baseline_max_epochs:
        return True
    return len(history) >= args.baseline_min_epochs and _gain(history) < args.plateau


def _save_epoch(directory: Path, model: nn.Module, optimizer, history: list[float]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / "state.pt.tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, temporary)
    temporary.replace(directory / "state.pt")
    (directory / "history.json.tmp").write_text(json.dumps(history))
    (directory / "history.json.tmp").replace(directory / "history.json")


# --------------------------------------------------------------------------- one unit


def prune_unit(name: str, unit: Unit, baseline: nn.Module, data, args, seed: int) -> common.Pruned:
    """``baseline`` pruned by ``unit``'s tool and method (a copy; data criteria read the seed's first
    batches)."""
    model = copy.deepcopy(baseline)
    if unit.tool == "torchslim":
        if data_criterion(unit.method) is not None:
            first_batches(data, seed)
            prepare_data_criterion(model, unit.method, data.train_loader, max_batches=DEFAULT_BATCHES)
        return ts_prune(model, 32, args.target, round_to=args.round_to, criterion=unit.method)
    return tp_prune_with(name, unit.method, model, data, args, seed)


def tp_prune_with(name: str, importance: str, model: nn.Module, data, args, seed: int) -> common.Pruned:
    """Torch-Pruning with ``importance`` at the uniform ratio its L1 bisection found for this target
    (the channel counts of uniform pruning do not depend on the importance)."""
    round_to = None if args.round_to <= 1 else args.round_to
    ratio = common.tp_prune_cached(name, model, 32, args.target, round_to).ratio
    before, started = macs(model, 32), time.perf_counter()
    if importance == "taylor":  # Taylor reads gradients: of the same batches torchslim's taylor reads
        first_batches(data, seed)
        model.zero_grad()
        for index, (images, targets) in enumerate(data.train_loader):
            if index == DEFAULT_BATCHES:
                break
            nn.functional.cross_entropy(model(images), targets).backward()
    example = torch.randn(1, 3, 32, 32)
    pruned = common.tp_prune_once(model.eval(), example, ratio, round_to, tp_importance(importance))
    pruned.zero_grad(set_to_none=True)
    after = macs(pruned, 32)
    hit = abs(1 - after / before - args.target) <= common.TOLERANCE
    return common.Pruned(pruned, before, after, time.perf_counter() - started, hit=hit, ratio=ratio)


def recover(unit: Unit, baseline: nn.Module, pruned: common.Pruned, data, args, seed: int) -> dict:
    """BN re-estimation (then reconstruction for a ``+rec`` unit) in place; validation top-1 after each."""
    from torchslim.recovery.batch_norm import recalibrate_batch_norm
    from torchslim.recovery.reconstruction import reconstruct

    entry = {"val_after_prune": top1(pruned.model, data.val_loader)}
    first_batches(data, seed)
    recalibrate_batch_norm(pruned.model, data.train_loader, num_batches=args.bn_batches)
    entry["val_after_bn"] = top1(pruned.model, data.val_loader)
    if unit.reconstruct:
        first_batches(data, seed)
        result = pruned.result
        reconstruct(
            baseline,
            pruned.model,
            data.train_loader,
            group_set=result.group_set,
            mask=result.plan.mask,
            num_batches=args.rec_batches,
            seed=seed,
        )
        entry["val_after_rec"] = top1(pruned.model, data.val_loader)
    return entry


def run_unit(name: str, unit: Unit, baseline: nn.Module, data, args, seed: int) -> dict:
    """One (unit, seed): prune, recover, fine-tune; validation top-1 per epoch, test top-1 at the end."""
    started = time.perf_counter()
    if unit.tool == "control":
        model, entry = copy.deepcopy(baseline), {"macs_left": 1.0, "hit": True}
    else:
        pruned = prune_unit(name, unit, baseline, data, args, seed)
        entry = {"macs_left": pruned.macs_left, "hit": pruned.hit, "prune_seconds": pruned.seconds}
        entry.update(recover(unit, baseline, pruned, data, args, seed))
        model = pruned.model
    history = train_epochs(model, data, epochs=args.finetune_epochs, lr=args.finetune_lr, seed=seed)
    entry["val_per_epoch"] = [h["top1"] for h in history]
    entry["val_top1"] = history[-1]["top1"]
    entry["test_top1"] = top1(model, data.test_loader)
    entry["seconds"] = time.perf_counter() - started
    return entry


# --------------------------------------------------------------------------- the run, resumable


def results_path(name: str) -> Path:
    return common.RESULTS / f"p1_like_for_like-{name}.json"


def load_or_start(name: str, args) -> dict:
    """This model's results so far; a file written with another recipe is refused, not mixed in."""
    recipe = {k: getattr(args, k) for k in RECIPE}
    path = results_path(name)
    if not path.is_file():
        return {"benchmark": "P1 like for like", "model": name, "recipe": recipe, "units": {}}
    payload = json.loads(path.read_text())
    if payload.get("recipe") != recipe:
        raise SystemExit(f"{path} was written with another recipe ({payload.get('recipe')}); move it away")
    return payload


def save(name: str, payload: dict) -> None:
    path = results_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=1) + "\n")
    temporary.replace(path)


def run_model(name: str, args, validation) -> dict:
    payload = load_or_start(name, args)
    baseline, record = plateau_baseline(name, args, loaders(args, 0, validation))
    if "baseline" not in payload:
        record["test_top1"] = top1(baseline, loaders(args, 0, validation).test_loader)
        payload["baseline"] = record | {"macs": macs(baseline, 32)}
    payload["torchslim_default"] = torchslim_default_criterion()
    units = units_for(args.pairs, args.reconstruct_all)
    payload["units_order"] = list(dict.fromkeys(payload.get("units_order", []) + [u.key for u in units]))
    for seed in args.seeds:
        data = loaders(args, seed, validation)
        for unit in units:
            done = payload["units"].setdefault(unit.key, {})
            if str(seed) in done:
                continue
            done[str(seed)] = run_unit(name, unit, baseline, data, args, seed)
            payload["machine"] = machine_info(args.threads)
            save(name, payload)
            entry = done[str(seed)]
            log(f"{name} {unit.key} seed {seed}: test {entry['test_top1']:.2f}% ({entry['seconds']:.0f} s)")
    return payload


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.smoke:  # the tiny settings, except --models or --pairs given on the command line
        given = {
            k
            for k, default in (("models", list(MODELS)), ("pairs", list(PAIRS)))
            if getattr(args, k) != default
        }
        vars(args).update({k: v for k, v in SMOKE.items() if k not in given})
        common.use_results_dir(args.results_dir or Path(tempfile.mkdtemp(prefix="p1-smoke-")))
        common.CACHE = common.RESULTS / "cache"
        globals()["CACHE"] = common.CACHE
    elif args.results_dir is not None:
        common.use_results_dir(args.results_dir)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    validation = common.fmnist_validation_loader(args.val_images)
    for name in args.models:
        run_model(name, args, validation)
    log(f"P1 like for like: {time.perf_counter() - started:.0f} s; results in {common.RESULTS}")


if __name__ == "__main__":
    main()
