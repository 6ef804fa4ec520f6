"""One model, one tool, for benchmarks/timm_coverage.py: build a random-init timm model, prune it to the
MACs target, and print one JSON line saying what happened. Run in its own process with a time limit, so
a crash or a hang costs one model, not the run.

    python benchmarks/timm_worker.py TOOL NAME --target 0.3 --round-to 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random init only: nothing may be downloaded

import timm  # noqa: E402
import torch  # noqa: E402
from common import TOLERANCE, macs, tp_prune  # noqa: E402
from torch import nn  # noqa: E402

from torchslim.errors import TorchslimError  # noqa: E402
from torchslim.pruning.explain import explain_groups  # noqa: E402
from torchslim.pruning.prune import analyze, prune  # noqa: E402

SMALL_INPUT = 64  # tried first, unless the model's config fixes its input size


def build(name: str) -> nn.Module:
    """A random timm model whose norms and scales are far from their init (a zero-initialised last BN or
    a 1e-6 layer scale would hide a wrong cut from the oracle)."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_var is not None:
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
        for parameter in model.parameters():
            if parameter.dim() == 1:  # norm weights and biases, layer scales: off their constant init
                parameter.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def input_size(name: str, model: nn.Module) -> int:
    """The small input if the model runs on it, else the smallest size its config declares
    (``min_input_size``: a ViT whose patches must tile the image), else its configured size. A
    412M-parameter ViT at its 546 px default costs minutes of forward passes to verify."""
    cfg = model.pretrained_cfg or {}
    default = int((cfg.get("input_size") or (3, 224, 224))[-1])
    if cfg.get("fixed_input_size") or default <= SMALL_INPUT:
        return default
    smallest = int((cfg.get("min_input_size") or (3, default, default))[-1])
    for size in dict.fromkeys((SMALL_INPUT, smallest)):
        if size < default and _runs_at(model, size):
            return size
    return default


def _runs_at(model: nn.Module, size: int) -> bool:
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
        return True
    except Exception:  # too small for its strides or its positional embeddings
        return False


def run_torchslim(model: nn.Module, size: int, args: argparse.Namespace) -> dict:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    started = time.perf_counter()
    try:
        result = prune(model, x, target_flops=args.target, round_to=args.round_to, verify=True)
    except TorchslimError as error:
        return {"outcome": "refused", "reason": str(error), **_explained(model, x[:1], args.round_to)}
    report = result.report
    outcome = "pruned" if report.verified else "wrong"  # "wrong": an oracle failure is a torchslim bug
    return {
        "outcome": outcome,
        "macs_removed": report.flops_reduction,
        "hit": abs(report.flops_reduction - args.target) <= TOLERANCE,
        "verified": report.verified,
        "max_abs_diff": report.max_abs_diff,
        "groups_pruned": report.groups_pruned,
        "groups_kept": report.groups_skipped,
        "seconds": time.perf_counter() - started,
    }


def _explained(model: nn.Module, x: torch.Tensor, round_to: int) -> dict:
    """What blocks the model, when it traces at all."""
    try:
        explanation = explain_groups(analyze(model, x), round_to)
    except TorchslimError:
        return {}
    return {
        "prunable_macs_share": explanation.prunable_macs_share,
        "blockers": [b.describe() for b in explanation.blockers if not b.reason.startswith("model output")][
            :5
        ],
    }


def run_torch_pruning(model: nn.Module, size: int, args: argparse.Namespace) -> dict:
    """Torch-Pruning's documented use: MagnitudePruner (L1), classifier in ignored_layers, one ratio
    bisected to the MACs target. It counts as pruned when it ran and kept the output shape; its cut is
    not checked against an oracle (unverified)."""
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        shape = tuple(model(x).shape)
    started = time.perf_counter()
    result = tp_prune(model, size, args.target, round_to=args.round_to, ignored=_classifier)
    with torch.no_grad():
        kept_shape = tuple(result.model(x).shape) == shape
    return {
        "outcome": "pruned" if kept_shape else "wrong",
        "macs_removed": result.reduction,
        "hit": result.hit,
        "ratio": result.ratio,
        "tries": result.tries,
        "seconds": time.perf_counter() - started,
        "macs_after_counted": macs(result.model, size),
    }


def _classifier(model: nn.Module) -> list[nn.Module]:
    """timm's own answer to "which layer is the classifier" (Torch-Pruning must not cut the logits)."""
    head = model.get_classifier()
    return [head] if isinstance(head, nn.Module) else list(head)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=("torchslim", "torch_pruning"))
    parser.add_argument("name")
    parser.add_argument("--target", type=float, default=0.3)
    parser.add_argument("--round-to", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    record: dict = {"tool": args.tool, "name": args.name}
    try:
        model = build(args.name)
        record["input_size"] = size = input_size(args.name, model)
        record["params"] = sum(p.numel() for p in model.parameters())
        record.update((run_torchslim if args.tool == "torchslim" else run_torch_pruning)(model, size, args))
    except Exception as error:  # any crash is the result we record
        lines = str(error).strip().splitlines()
        record.update(outcome="error", reason=f"{type(error).__name__}: {lines[0] if lines else ''}"[:400])
        record["traceback"] = traceback.format_exc()[-2000:]
    print(json.dumps(record, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
