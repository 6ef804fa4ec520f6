"""A small ViT on Fashion-MNIST pruned to -50% MACs three ways, fine-tuned with the same budget.

The model is timm's VisionTransformer (4 blocks, 4 heads, width 64, patch 4, 32x32), since Torch-Pruning
1.6 prunes the heads of timm's ``Attention`` (its qkv Linear) but finds none in torchvision's
``nn.MultiheadAttention``: a head-pruning peer row needs timm.

- ``mlp_only``: torchslim, only the MLP hidden widths (``pruned_params`` selects ``mlp.fc1``);
- ``balanced``: torchslim, heads + MLP + embedding, one uniform fraction for every group;
- ``balanced_per_mac``: torchslim, heads + MLP + embedding by importance per MAC saved;
- ``torch_pruning_heads``: Torch-Pruning 1.6's MetaPruner with head pruning, its ratio bisected to
  the same MACs (counted by torchslim: attention's matrix products included).

Top-1 on the Fashion-MNIST test images (reported) and on a validation split held out from the training
images (``val_top1*``: what choosing between variants reads), before and after fine-tuning,
MACs, and the ONNX Runtime batch-1 speedup of each variant over the unpruned model, per seed;
benchmarks/md_small_vit.py writes the mean +- std table.

A seed sets the baseline's initialisation and the training order (baseline and fine-tune).

Resumable: each seed's row is written to the results file as soon as it is done, and its variants'
ONNX files are kept in benchmarks/cache/, so a stopped run goes on with the next seed. The speedups
are timed after the last seed, every seed's models in a fresh process through torchslim's timing path
(interleaved rounds, steady rounds only); ``--timing-only`` retimes the cached files, for a quiet machine.

    python benchmarks/small_vit.py                      # the full run (3 seeds)
    python benchmarks/small_vit.py --timing-only        # retime the cached ONNX files
    python benchmarks/small_vit.py --seeds 0 --epochs 1 --finetune-epochs 1 --train-limit 2000 \\
        --val-images 500 --test-limit 500 --output small_vit_smoke        # minutes
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from types import SimpleNamespace

import common
import numpy as np
import torch
from common import TOLERANCE, fmnist_loaders, log, machine_info, macs, train_epochs, write_result
from torch import nn

from torchslim.engine import evaluate
from torchslim.export import export_onnx
from torchslim.latency.compare import compare_latency, in_fresh_process
from torchslim.pruning.prune import prune

SIZE = 32
ROUND_TO = 8  # both tools' alignment of the widths they keep
MLP_ONLY = r"blocks\.\d+\.mlp\.fc1\.weight"


def small_vit(seed: int) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=SIZE, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, num_classes=10
    )


def _attention_layers(model: nn.Module) -> list[nn.Module]:
    from timm.layers import Attention

    return [m for m in model.modules() if isinstance(m, Attention)]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="Baseline training epochs.")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument(
        "--val-images",
        type=int,
        default=5000,
        help="Validation: the last N training images, never trained on.",
    )
    parser.add_argument("--test-limit", type=int, default=None, help="Test images (default: all 10,000).")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads.")
    parser.add_argument("--timing-rounds", type=int, default=50)
    parser.add_argument("--output", default="small_vit", help="Result name under benchmarks/results/.")
    parser.add_argument("--timing-only", action="store_true", help="Only retime the cached ONNX files.")
    args = parser.parse_args(argv)
    if args.train_limit + args.val_images > common.TRAIN_IMAGES:
        parser.error(f"--train-limit + --val-images must be at most {common.TRAIN_IMAGES}")
    return args


# What a results file was written with: a resumed run must use the same (timing settings may change).
RECIPE = ("seeds", "epochs", "finetune_epochs", "lr", "train_limit", "val_images", "test_limit", "target")


def torchslim_variants(model: nn.Module, target: float) -> dict[str, nn.Module]:
    example = torch.randn(1, 3, SIZE, SIZE)
    options = {
        "mlp_only": {"pruned_params": MLP_ONLY},
        "balanced": {},
        "balanced_per_mac": {"global_ranking": "per_mac"},
    }
    pruned = {}
    for name, kwargs in options.items():
        result = prune(model, example, target_flops=target, round_to=ROUND_TO, verify=True, **kwargs)
        if not result.report.verified:
            raise RuntimeError(f"{name}: the oracle failed (max |diff| {result.report.max_abs_diff})")
        log(f"  {name}: -{result.report.flops_reduction:.1%} MACs, cut {result.report.cut_by_kind()}")
        pruned[name] = result.model
    return pruned


def tp_heads_once(model: nn.Module, ratio: float, head_ratio: float) -> nn.Module:
    """Torch-Pruning 1.6, group L1 magnitude: channels pruned by ``ratio`` (rounded to :data:`ROUND_TO`,
    as torchslim's) and heads by ``head_ratio``; prunes ``model``."""
    import torch_pruning as tp

    attention = _attention_layers(model)
    pruner = tp.pruner.MetaPruner(
        model,
        torch.randn(1, 3, SIZE, SIZE),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        num_heads={m.qkv: m.num_heads for m in attention},
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=head_ratio,
        ignored_layers=[model.head],
        round_to=ROUND_TO,
    )
    pruner.step()
    for m in attention:  # timm's forward reads these: a head keeps its head_dim
        m.num_heads = pruner.num_heads[m.qkv]
        m.attn_dim = m.num_heads * m.head_dim
    return model


# Head ratios tried: with 4 heads a layer, 1 or 2 heads go. The channel ratio is bisected for each.
TP_HEAD_RATIOS = (0.25, 0.5)


def tp_heads(model: nn.Module, target: float) -> nn.Module:
    """:func:`tp_heads_once` closest to dropping MACs by ``target``: for each head ratio of
    :data:`TP_HEAD_RATIOS`, the channel ratio bisected (heads and rounded widths move MACs in steps, so one
    ratio for both can miss the target)."""
    before = macs(model, SIZE)
    best = None
    for head_ratio in TP_HEAD_RATIOS:
        low, high = 0.0, 0.95
        for _ in range(12):
            ratio = (low + high) / 2
            candidate = tp_heads_once(copy.deepcopy(model), ratio, head_ratio)
            reduction = 1 - macs(candidate, SIZE) / before
            if best is None or abs(reduction - target) < abs(best[0] - target):
                best = (reduction, candidate, head_ratio)
            if abs(reduction - target) <= TOLERANCE / 4:
                break
            low, high = (ratio, high) if reduction < target else (low, ratio)
    log(f"  torch_pruning_heads: -{best[0]:.1%} MACs (head ratio {best[2]})")
    return best[1]


def widths(model: nn.Module) -> dict[str, int]:
    """What a variant kept: attention heads and MLP hidden channels over all blocks, embedding width."""
    return {
        "heads": sum(m.num_heads for m in _attention_layers(model)),
        "mlp_hidden": sum(block.mlp.fc1.out_features for block in model.blocks),
        "embedding": model.patch_embed.proj.out_channels,
    }


def onnx_dir(args, seed: int) -> Path:
    """Where ``seed``'s baseline and variants are kept as ONNX files for the timing phase."""
    return common.CACHE / f"{args.output}-onnx" / f"seed{seed}"


def save_onnx(models: dict[str, nn.Module], directory: Path) -> None:
    """Each model exported (and checked against PyTorch) as ``directory/<name>.onnx``."""
    directory.mkdir(parents=True, exist_ok=True)
    example = torch.randn(1, 3, SIZE, SIZE)
    for name, model in models.items():
        export_onnx(copy.deepcopy(model).eval(), example, directory / f"{name}.onnx")


def ort_speedups(directory: Path, names: list[str], threads: int, rounds: int) -> dict[str, float]:
    """ONNX Runtime batch-1 speedup of every variant over ``baseline.onnx`` in ``directory``, timed
    interleaved through torchslim's timing path in a fresh process."""
    paths = {name: directory / f"{name}.onnx" for name in ["baseline", *names]}
    result = in_fresh_process(
        compare_latency, dict.fromkeys(paths), SIZE, onnx_paths=paths, threads=threads, rounds=rounds
    )
    if not result.steady:
        log(f"  {directory.name}: fewer than half the timing rounds were steady (a busy machine)")
    return {name: result.speedup[name] for name in names}


def time_all(payload: dict, args) -> None:
    """Fill every seed's ``ort_speedup_b1`` from its cached ONNX files."""
    for seed, row in payload["seeds"].items():
        names = [name for name, entry in row.items() if name != "baseline" and "error" not in entry]
        speedups = ort_speedups(onnx_dir(args, int(seed)), names, args.threads, args.timing_rounds)
        for name in names:
            row[name]["ort_speedup_b1"] = speedups[name]
        log(f"  seed {seed}: " + ", ".join(f"{n} {v:.2f}x" for n, v in speedups.items()))
    payload["timing_machine"] = machine_info(args.threads)


def top1s(model: nn.Module, data, suffix: str) -> dict[str, float]:
    """``top1<suffix>`` on the test images (reported) and ``val_top1<suffix>`` on the validation split
    (what a choice between variants reads)."""
    return {
        f"top1{suffix}": evaluate(model, data.test_loader).top1,
        f"val_top1{suffix}": evaluate(model, data.val_loader).top1,
    }


def split_data(args, seed: int) -> SimpleNamespace:
    """Training slice in ``seed``'s order, validation split (``val_loader``: what training logs and choices
    read) and test set."""
    data = fmnist_loaders(args.train_limit, args.test_limit, seed=seed)
    validation = common.fmnist_validation_loader(args.val_images)
    return SimpleNamespace(train_loader=data.train_loader, val_loader=validation, test_loader=data.val_loader)


def run_seed(seed: int, data, args) -> dict:
    log(f"seed {seed}: training the baseline for {args.epochs} epochs")
    baseline = small_vit(seed)
    train_epochs(baseline, data, epochs=args.epochs, lr=args.lr, seed=seed)
    row = {"baseline": {"macs": macs(baseline, SIZE), **widths(baseline)}}
    row["baseline"].update(top1s(baseline, data, ""))
    variants = torchslim_variants(baseline.eval(), args.target)
    try:
        variants["torch_pruning_heads"] = tp_heads(baseline.eval(), args.target)
    except Exception as error:  # Torch-Pruning's own failure is a result to report, not a crash
        row["torch_pruning_heads"] = {"error": f"{type(error).__name__}: {error}"[:300]}
        log(f"  torch_pruning_heads failed: {row['torch_pruning_heads']['error']}")
    for name, model in variants.items():
        entry = {"macs": macs(model, SIZE), **widths(model), **top1s(model, data, "_pruned")}
        train_epochs(model, data, epochs=args.finetune_epochs, lr=args.lr / 5, seed=seed)
        row[name] = entry | top1s(model, data, "_finetuned")
    save_onnx({"baseline": baseline, **variants}, onnx_dir(args, seed))
    return row


def load_or_start(args) -> dict:
    """The results so far (seeds done), or a new payload; a file of another recipe is refused."""
    recipe = {key: getattr(args, key) for key in RECIPE}
    path = common.RESULTS / f"{args.output}.json"
    if not path.is_file():
        return {"args": vars(args), "seeds": {}}
    payload = json.loads(path.read_text())
    if {key: payload["args"].get(key) for key in RECIPE} != recipe:
        raise SystemExit(f"{path} was written with other settings ({payload['args']}); move it away")
    return payload


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    payload = load_or_start(args)
    if not args.timing_only:
        for seed in args.seeds:
            if str(seed) in payload["seeds"]:
                continue
            payload["seeds"][str(seed)] = run_seed(seed, split_data(args, seed), args)
            payload["machine"] = machine_info(args.threads)
            write_result(args.output, payload)
    missing = [seed for seed in args.seeds if str(seed) not in payload["seeds"]]
    if missing:
        raise SystemExit(f"seeds {missing} have not run yet: run without --timing-only first")
    payload["args"] = vars(args)
    time_all(payload, args)
    payload["summary"] = summarize(payload["seeds"])
    path = write_result(args.output, payload)
    log(f"wrote {path}")
    return payload


def summarize(rows: dict) -> dict:
    """Mean and std over seeds of every number of every variant."""
    summary: dict[str, dict] = {}
    for row in rows.values():
        for variant, entry in row.items():
            for key, value in entry.items():
                if isinstance(value, (int, float)):
                    summary.setdefault(variant, {}).setdefault(key, []).append(float(value))
    return {
        variant: {key: [float(np.mean(v)), float(np.std(v))] for key, v in values.items()}
        for variant, values in summary.items()
    }


if __name__ == "__main__":
    main()
