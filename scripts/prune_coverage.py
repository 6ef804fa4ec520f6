"""Prune every torchvision classifier once and report which ones torchslim handles.

For each model in ``torchslim.models.torchvision_classifiers()`` this builds the
model (random weights, BN statistics calibrated on one random batch so outputs
have a real scale), prunes it to ``--target-flops`` with the correctness oracle
on, checks the oracle again independently (relative difference of the pruned
model's eval output against the oracle reference), and prints one line::

    resnet18                  ok (64px, -50.0% MACs, 12 groups pruned, rel diff 3e-08, 4.1 s)
    vit_b_16                  unprunable: no prunable group: ...
    some_model                error: RuntimeError: ...

followed by totals. Every model runs in its own worker process (a crash, an
out-of-memory kill or a hang in one model cannot take the others down; see
``--timeout``). Results are written as JSON to ``--output`` after every model,
so an interrupted run keeps what it finished.

    python scripts/prune_coverage.py --output coverage.json
    python scripts/prune_coverage.py --models resnet18 vit_b_16 --output /tmp/c.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

DEFAULT_SIZE = 64
# Input size for calibration and pruning when the wanted size is too small for a train-mode branch.
CALIBRATION_FALLBACK_SIZE = 299
# Relative tolerance of the independent oracle check (the pruner's own uses 1e-4 too).
ORACLE_RTOL = 1e-4


def input_size_for(name: str, model: Any = None, wanted: int = DEFAULT_SIZE) -> int:
    """The smallest input size >= ``wanted`` the model accepts.

    Vision transformers check for one exact size (their ``image_size``); other
    models publish a minimum in their weights' metadata (inception_v3 75,
    swin 224, swin_v2 256, alexnet 63 ...).
    """
    if model is not None and isinstance(getattr(model, "image_size", None), int):
        return int(model.image_size)
    import torchvision

    try:
        weights = list(torchvision.models.get_model_weights(name))
    except (ValueError, KeyError):
        weights = []
    minimum = max((max(w.meta.get("min_size", (1, 1))) for w in weights), default=1)
    # Minimum sizes published with weights are for the weights' own transform; swin_v2's
    # window attention needs a multiple of 32 at least 256 without weights too.
    return max(wanted, int(minimum))


def make_outputs_sensitive(model: Any, seed: int = 0) -> list[str]:
    """Give all-zero conv/linear weights (ViT's zero-initialised head) small random values.

    A zero classifier makes every output 0 and the oracle comparison vacuous. Returns the
    names of what was changed.
    """
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed + 2)
    changed = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and weight is not None:
            if not weight.detach().any():
                with torch.no_grad():
                    weight.copy_(torch.randn(weight.shape, generator=generator) * 0.02)
                changed.append(name)
        # ConvNeXt scales each residual branch by 1e-6 at init: pruning inside a block would
        # then change outputs by less than float rounding, and the oracle would see nothing.
        scale = getattr(module, "layer_scale", None)
        if isinstance(scale, nn.Parameter) and float(scale.detach().abs().max()) < 1e-3:
            with torch.no_grad():
                scale.fill_(1.0)
            changed.append(f"{name}.layer_scale")
    return changed


def calibrate(model: Any, size: int, seed: int = 0) -> None:
    """Set every batch norm's running statistics from one random batch (cumulative average)."""
    import torch
    from torch import nn

    touched = False
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
            touched = True
    if not touched:
        return
    generator = torch.Generator().manual_seed(seed + 1)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, size, size, generator=generator))
    model.eval()


def train_forward(model: Any, example: Any) -> str:
    """'ok', or why the pruned model cannot run in train mode (as fine-tuning would)."""
    import torch

    model.train()
    try:
        with torch.no_grad():
            model(example)
    except Exception as error:  # report, do not fail: pruning itself succeeded
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
    finally:
        model.eval()
    return "ok"


def run_one(name: str, target: float, wanted_size: int, round_to: int) -> dict[str, Any]:
    """Prune one torchvision model; never raises (errors become the result)."""
    import torch

    from torchslim.errors import PruningError
    from torchslim.graph import oracle_reference
    from torchslim.models import build_model
    from torchslim.pruning.prune import prune

    result: dict[str, Any] = {"model": name, "target_flops": target}
    started = time.perf_counter()
    stage = "build"
    try:
        torch.manual_seed(0)
        model = build_model(f"torchvision:{name}", num_classes=10).eval()
        size = input_size_for(name, model, wanted_size)
        result["input_size"] = size
        stage = "calibrate"
        reinitialised = make_outputs_sensitive(model)
        if reinitialised:
            result["reinitialised_zero_weights"] = reinitialised
        try:
            calibrate(model, size)
        except RuntimeError:
            # Train-mode-only branches (inception_v3's auxiliary classifier) may need a larger input
            # than the eval-mode network; pruning resizes them, so it runs at a size they accept.
            size = CALIBRATION_FALLBACK_SIZE
            calibrate(model, size)
            result["input_size"] = size
        example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        stage = "prune"
        pruned = prune(model, example, target_flops=target, round_to=round_to, verify=True)
        report = pruned.report
        stage = "oracle"
        reference = oracle_reference(model, pruned.group_set, pruned.plan.mask).eval()
        with torch.no_grad():
            expected = reference(example)
            actual = pruned.model.eval()(example)
        scale = float(expected.abs().max())
        rel = float((expected - actual).abs().max()) / max(scale, 1e-30)
        reasons: dict[str, int] = {}
        for reason in report.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        result.update(
            flops_reduction=report.flops_reduction,
            macs_before=report.macs_before,
            macs_after=report.macs_after,
            params_before=report.params_before,
            params_after=report.params_after,
            groups_pruned=report.groups_pruned,
            groups_skipped=report.groups_skipped,
            cut_by_kind=report.cut_by_kind(),
            skipped_reasons=reasons,
            verified=report.verified,
            output_scale=scale,
            rel_diff=rel,
        )
        stage = "train-mode forward"
        result["train_forward"] = train_forward(pruned.model, example)
        if result["train_forward"] != "ok" and train_forward(model, example) != "ok":
            result["train_forward"] = "n/a: the unpruned model fails a train-mode forward at this size too"
        if scale < 1e-6:
            result.update(
                status="error", reason=f"outputs are ~0 (scale {scale:.1g}): the oracle check is vacuous"
            )
        elif not report.verified or not rel <= ORACLE_RTOL:
            result.update(
                status="error", reason=f"oracle mismatch: rel diff {rel:.3g} (verified={report.verified})"
            )
        elif abs(report.flops_reduction - target) > 0.01:
            result.update(
                status="error",
                reason=f"reduction {report.flops_reduction:.4f} is not within 0.01 of {target}",
            )
        else:
            result.update(status="ok", reason="")
    except PruningError as error:
        result.update(status="unprunable", reason=str(error), stage=stage)
    except Exception as error:  # a bug somewhere: keep the message and where it happened
        frames = traceback.extract_tb(error.__traceback__)
        ours = [f for f in frames if "torchslim" in f.filename] or frames
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno} in {ours[-1].name}" if ours else "?"
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        result.update(
            status="error",
            reason=f"{type(error).__name__}: {message[:300]}",
            stage=stage,
            where=where,
            traceback="".join(traceback.format_exception(error)[-6:])[-3000:],
        )
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def run_isolated(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--target-flops",
        str(args.target_flops),
        "--input-size",
        str(args.input_size),
        "--round-to",
        str(args.round_to),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {
            "model": name,
            "status": "error",
            "reason": f"timeout after {args.timeout} s",
            "seconds": args.timeout,
        }
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    tail = done.stderr.strip().splitlines()[-1:] or [""]
    return {
        "model": name,
        "status": "error",
        "reason": f"worker died with exit code {done.returncode}: {tail[0][:300]}",
        "seconds": round(time.perf_counter() - started, 2),
    }


def describe(result: dict[str, Any]) -> str:
    if result["status"] == "ok":
        line = (
            f"ok ({result['input_size']}px, -{result['flops_reduction']:.1%} MACs, "
            f"{result['groups_pruned']} groups pruned, rel diff {result['rel_diff']:.1g}, "
            f"{result['seconds']:.1f} s)"
        )
        if not result.get("train_forward", "ok").startswith(("ok", "n/a")):
            line += f"; warning: train-mode forward fails: {result['train_forward']}"
        return line
    return f"{result['status']}: {result['reason']}"


def failure_kind(result: dict[str, Any]) -> str:
    """The reason with numbers (shapes, node indices, times) blanked, plus where it was raised,
    so models failing the same way are listed together."""
    reason = re.sub(r"\d+", "N", result["reason"])
    where = re.sub(r":\d+ ", " ", result["where"]) if result.get("where") else ""
    return f"{result['status']}: {reason}" + (f" [{where}, while: {result.get('stage')}]" if where else "")


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    totals = {"models": len(results), "ok": 0, "unprunable": 0, "error": 0}
    by_reason: dict[str, list[str]] = {}
    train_failures: list[str] = []
    for r in results:
        totals[r["status"]] = totals.get(r["status"], 0) + 1
        if r["status"] != "ok":
            by_reason.setdefault(failure_kind(r), []).append(r["model"])
        elif not r.get("train_forward", "ok").startswith(("ok", "n/a")):
            train_failures.append(r["model"])
    totals["ok_but_train_mode_fails"] = len(train_failures)
    return {"totals": totals, "failures_by_reason": by_reason, "train_mode_failures": train_failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=False, help="Write the JSON results here.")
    parser.add_argument("--models", nargs="*", help="Only these torchvision names (default: all).")
    parser.add_argument(
        "--target-flops", type=float, default=0.5, help="Fraction of MACs to remove (default 0.5)."
    )
    parser.add_argument(
        "--input-size", type=int, default=DEFAULT_SIZE, help="Input size, raised to each model's minimum."
    )
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per model (default: torch's). On a busy machine 1 is often much faster.",
    )
    parser.add_argument(
        "--timeout", type=int, default=900, help="Seconds per model before it counts as an error."
    )
    parser.add_argument(
        "--in-process", action="store_true", help="Run all models in this process (debugging)."
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(run_one(args.worker, args.target_flops, args.input_size, args.round_to)), flush=True)
        return 0
    if not args.output:
        parser.error("--output is required")

    from torchslim.models import torchvision_classifiers

    names = torchvision_classifiers()
    if args.models:
        unknown = sorted(set(args.models) - set(names))
        if unknown:
            parser.error(f"unknown torchvision classifiers: {', '.join(unknown)}")
        names = [n for n in names if n in args.models]
    output = Path(args.output)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in names:
        if args.in_process:
            result = run_one(name, args.target_flops, args.input_size, args.round_to)
        else:
            result = run_isolated(name, args)
        results.append(result)
        print(f"{name:24s}  {describe(result)}", flush=True)
        payload = {
            "target_flops": args.target_flops,
            "complete": len(results) == len(names),
            "seconds": round(time.perf_counter() - started, 1),
            **summarize(results),
            "results": results,
        }
        output.write_text(json.dumps(payload, indent=1))
    summary = summarize(results)
    totals = summary["totals"]
    print(
        f"\n{totals['models']} models: {totals['ok']} ok, {totals['unprunable']} unprunable, "
        f"{totals['error']} error ({time.perf_counter() - started:.0f} s)"
    )
    for reason, models in sorted(summary["failures_by_reason"].items(), key=lambda kv: -len(kv[1])):
        print(f"  [{len(models)}] {reason}\n      {', '.join(models)}")
    if summary["train_mode_failures"]:
        print(f"  pruned fine but fail a train-mode forward: {', '.join(summary['train_mode_failures'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
