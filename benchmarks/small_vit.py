"""A small ViT on Fashion-MNIST pruned to -50% MACs three ways, fine-tuned with the same budget.

- ``mlp_only``: torchslim, only the MLP hidden widths (``pruned_params`` selects ``mlp.0``);
- ``balanced``: torchslim, heads + MLP + embedding, one uniform fraction for every group;
- ``balanced_per_mac``: torchslim, heads + MLP + embedding by importance per MAC saved;
- ``torch_pruning_heads``: Torch-Pruning 1.6's MetaPruner with head pruning, its ratio bisected to
  the same MACs (counted by torchslim: attention's matrix products included).

Top-1 before and after fine-tuning, MACs, and the ONNX Runtime batch-1 speedup of each variant over
the unpruned model, per seed; benchmarks/md_small_vit.py writes the mean +- std table.

    python benchmarks/small_vit.py                      # the full run (3 seeds)
    python benchmarks/small_vit.py --seeds 0 --epochs 1 --finetune-epochs 1 --train-limit 2000 \\
        --val-limit 500 --output small_vit_smoke        # minutes
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import TOLERANCE, fmnist_loaders, log, machine_info, macs, train_epochs, write_result
from torch import nn
from torchvision.models import VisionTransformer

from torchslim.engine import evaluate
from torchslim.export import OrtModel, export_onnx
from torchslim.export.timing import ort_callable, speedup, time_interleaved
from torchslim.pruning.prune import prune

SIZE = 32
MLP_ONLY = r"encoder\.layers\.encoder_layer_\d+\.mlp\.0\.weight"


def small_vit(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return VisionTransformer(
        image_size=SIZE, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=256, num_classes=10
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="Baseline training epochs.")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--val-limit", type=int, default=5000)
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads.")
    parser.add_argument("--timing-rounds", type=int, default=50)
    parser.add_argument("--output", default="small_vit", help="Result name under benchmarks/results/.")
    return parser.parse_args(argv)


def torchslim_variants(model: nn.Module, target: float) -> dict[str, nn.Module]:
    example = torch.randn(1, 3, SIZE, SIZE)
    options = {
        "mlp_only": {"pruned_params": MLP_ONLY},
        "balanced": {},
        "balanced_per_mac": {"global_ranking": "per_mac"},
    }
    pruned = {}
    for name, kwargs in options.items():
        result = prune(model, example, target_flops=target, round_to=8, verify=True, **kwargs)
        if not result.report.verified:
            raise RuntimeError(f"{name}: the oracle failed (max |diff| {result.report.max_abs_diff})")
        log(f"  {name}: -{result.report.flops_reduction:.1%} MACs, cut {result.report.cut_by_kind()}")
        pruned[name] = result.model
    return pruned


def tp_heads_once(model: nn.Module, ratio: float) -> nn.Module:
    """Torch-Pruning 1.6, L1 magnitude, heads pruned by ``ratio`` and channels alike; prunes ``model``."""
    import torch_pruning as tp

    attention = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    pruner = tp.pruner.MetaPruner(
        model,
        torch.randn(1, 3, SIZE, SIZE),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        num_heads={m: m.num_heads for m in attention},
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
        ignored_layers=[model.heads],
        unwrapped_parameters=[(model.class_token, 2), (model.encoder.pos_embedding, 2)],
    )
    pruner.step()
    for m in attention:
        m.num_heads = pruner.num_heads[m]
        m.head_dim = m.embed_dim // m.num_heads
    model.hidden_dim = model.conv_proj.out_channels
    return model


def tp_heads(model: nn.Module, target: float) -> nn.Module:
    """:func:`tp_heads_once` with its ratio bisected until MACs drop by ``target`` (or the closest)."""
    before = macs(model, SIZE)
    low, high, best = 0.0, 0.95, None
    for _ in range(12):
        ratio = (low + high) / 2
        candidate = tp_heads_once(copy.deepcopy(model), ratio)
        reduction = 1 - macs(candidate, SIZE) / before
        if best is None or abs(reduction - target) < abs(best[0] - target):
            best = (reduction, candidate)
        if abs(reduction - target) <= TOLERANCE / 4:
            break
        low, high = (ratio, high) if reduction < target else (low, ratio)
    log(f"  torch_pruning_heads: -{best[0]:.1%} MACs")
    return best[1]


def widths(model: nn.Module) -> dict[str, int]:
    """What a variant kept: attention heads and MLP hidden channels over all blocks, embedding width."""
    return {
        "heads": sum(m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)),
        "mlp_hidden": sum(layer.mlp[0].out_features for layer in model.encoder.layers),
        "embedding": model.conv_proj.out_channels,
    }


def ort_speedups(models: dict[str, nn.Module], threads: int, rounds: int) -> dict[str, float]:
    """ONNX Runtime batch-1 speedup of every model over ``models["baseline"]``, timed interleaved."""
    example = torch.randn(1, 3, SIZE, SIZE)
    with tempfile.TemporaryDirectory() as directory:
        calls = {}
        for name, model in models.items():
            path = Path(directory) / f"{name}.onnx"
            export_onnx(model.eval(), example, path)
            calls[name] = ort_callable(OrtModel(path, threads=threads), example.numpy())
        timings = time_interleaved(calls, warmup=5, rounds=rounds)
    return {name: speedup(timings["baseline"], timings[name]) for name in models}


def run_seed(seed: int, data, args) -> dict:
    log(f"seed {seed}: training the baseline for {args.epochs} epochs")
    baseline = small_vit(seed)
    train_epochs(baseline, data, epochs=args.epochs, lr=args.lr, seed=seed)
    row = {"baseline": {"top1": evaluate(baseline, data.val_loader).top1, "macs": macs(baseline, SIZE)}}
    row["baseline"].update(widths(baseline))
    variants = torchslim_variants(baseline.eval(), args.target)
    try:
        variants["torch_pruning_heads"] = tp_heads(baseline.eval(), args.target)
    except Exception as error:  # Torch-Pruning's own failure is a result to report, not a crash
        row["torch_pruning_heads"] = {"error": f"{type(error).__name__}: {error}"[:300]}
        log(f"  torch_pruning_heads failed: {row['torch_pruning_heads']['error']}")
    for name, model in variants.items():
        entry = {"macs": macs(model, SIZE), "top1_pruned": evaluate(model, data.val_loader).top1}
        entry.update(widths(model))
        train_epochs(model, data, epochs=args.finetune_epochs, lr=args.lr / 5, seed=seed)
        entry["top1_finetuned"] = evaluate(model, data.val_loader).top1
        row[name] = entry
    speedups = ort_speedups({"baseline": baseline, **variants}, args.threads, args.timing_rounds)
    for name in variants:
        row[name]["ort_speedup_b1"] = speedups[name]
    return row


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = fmnist_loaders(args.train_limit, args.val_limit)
    rows = {seed: run_seed(seed, data, args) for seed in args.seeds}
    payload = {"machine": machine_info(args.threads), "args": vars(args), "seeds": rows}
    payload["summary"] = summarize(rows)
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
