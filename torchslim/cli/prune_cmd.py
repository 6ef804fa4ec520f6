"""``prune``: prune a model once to a FLOPs target, verify it, and save it."""

from __future__ import annotations

import argparse
import time

from torchslim.criteria import data_criterion, list_criteria, prepare_data_criterion
from torchslim.data import DataBundle, build_loaders
from torchslim.engine import evaluate
from torchslim.errors import ConfigError
from torchslim.latency.machine import DEFAULT_THREADS, RUNTIMES
from torchslim.latency.planner import LatencyOptions, LatencyPlanner
from torchslim.models import save_model, seed_param_names
from torchslim.pruning.counting import human
from torchslim.pruning.planner import DEFAULT_ROUND_TO
from torchslim.pruning.prune import prune
from torchslim.recovery.batch_norm import DEFAULT_BN_BATCHES, recalibrate_batch_norm
from torchslim.recovery.reconstruction import DEFAULT_RECONSTRUCTION_BATCHES, reconstruct

from .common import add_model_arguments, load_model_from_args
from .output import emit_json, log, table


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="Prune a model once (no training) to a FLOPs target and save it.",
        description="Trace the model, find its channel dependency groups, and remove the least important "
        "channels so that MACs drop by --target-flops, keeping channel counts multiples of --round-to. "
        "The pruned model is saved as manifest.json + model.safetensors in --output.",
    )
    add_model_arguments(parser, saved=False)
    parser.add_argument(
        "--target-flops", type=float, required=True, help="Fraction of MACs to remove, e.g. 0.5."
    )
    parser.add_argument(
        "--criterion", default="l1_norm", help=f"Channel importance criterion: {', '.join(list_criteria())}."
    )
    parser.add_argument(
        "--pruned-params",
        default=None,
        help="Regex (re.match) over parameter names or seed names choosing which layers may lose channels "
        "(default: every prunable layer).",
    )
    parser.add_argument(
        "--round-to",
        type=int,
        default=DEFAULT_ROUND_TO,
        help=f"Keep channel counts multiples of N (default {DEFAULT_ROUND_TO}: what ONNX Runtime runs fastest).",
    )
    parser.add_argument(
        "--global-ranking",
        action="store_true",
        help="Rank channels across layers instead of one ratio for all.",
    )
    latency = parser.add_argument_group("latency-aware pruning (--align latency)")
    latency.add_argument(
        "--align",
        choices=("round_to", "latency"),
        default="round_to",
        help="round_to: one alignment for all layers. latency: per-layer alignment and channels traded between "
        "layers to cut measured latency on --runtime at the same MACs (latency table cached in "
        "~/.cache/torchslim/latency; on onnxruntime calibrated by profiling whole pruned models).",
    )
    latency.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime", help="Runtime to plan for.")
    latency.add_argument(
        "--latency-batch-size", type=int, default=1, help="Batch size to plan for (default 1)."
    )
    latency.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"Intra-op threads to plan for (default {DEFAULT_THREADS}).",
    )
    latency.add_argument("--latency-cache", default=None, help="Directory of the latency table.")
    latency.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="Plan from the latency table alone (no whole-model profiles).",
    )
    latency.add_argument(
        "--speed-slack",
        type=float,
        default=0.02,
        help="With --data: among the profiled plans within this fraction of the fastest, keep the one with the best "
        "top-1 after BN re-estimation on up to 1000 validation images (default 0.02; 0: the fastest).",
    )
    parser.add_argument("--output", help="Directory to save the pruned model to.")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="Check the pruned model against the unpruned one (correctness oracle).",
    )
    data = parser.add_argument_group("accuracy (needs --data)")
    data.add_argument(
        "--data",
        help="Data spec (fashion-mnist[:DIR], cifar10:DIR, imagenet:DIR, folder:DIR): report validation top-1 "
        "before pruning, right after, and after re-estimating batch-norm statistics on training batches.",
    )
    data.add_argument(
        "--bn-batches",
        type=int,
        default=DEFAULT_BN_BATCHES,
        help=f"Training batches for batch-norm re-estimation after pruning (default {DEFAULT_BN_BATCHES}; 0: off).",
    )
    data.add_argument(
        "--reconstruct-batches",
        type=int,
        default=DEFAULT_RECONSTRUCTION_BATCHES,
        help="Training batches to refit, after BN re-estimation, the layers that lost input channels so they "
        f"reproduce the unpruned outputs (least squares; default {DEFAULT_RECONSTRUCTION_BATCHES}; 0: off).",
    )
    data.add_argument("--val-limit", type=int, help="Evaluate on the first N validation images only.")
    data.add_argument("--batch-size", type=int, default=64, help="Images per batch (default 64).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    parser.set_defaults(handler=run_prune)


def _load_data(args: argparse.Namespace, loaded) -> DataBundle:
    """The loaders for ``--data``; the model's input size follows the data unless given or saved."""
    if args.bn_batches < 0:
        raise ConfigError(f"--bn-batches must be >= 0, got {args.bn_batches}")
    if args.reconstruct_batches < 0:
        raise ConfigError(f"--reconstruct-batches must be >= 0, got {args.reconstruct_batches}")
    size = args.input_size or (loaded.manifest or {}).get("input_size")
    bundle = build_loaders(args.data, batch_size=args.batch_size, image_size=size, val_limit=args.val_limit)
    loaded.input_size = bundle.image_size
    log(f"data: {bundle.description}")
    return bundle


def run_prune(args: argparse.Namespace) -> int:
    if not 0.0 < args.target_flops < 1.0:
        raise ConfigError(f"--target-flops must be in (0, 1), got {args.target_flops}")
    if args.criterion not in list_criteria():
        raise ConfigError(
            f"--criterion {args.criterion!r} is unknown; choose from {', '.join(list_criteria())}"
        )
    if args.align == "latency" and args.global_ranking:
        raise ConfigError(
            "--global-ranking does not apply with --align latency (it plans its own allocation)"
        )
    if args.speed_slack < 0:
        raise ConfigError(f"--speed-slack must be >= 0, got {args.speed_slack}")
    for name in ("latency_batch_size", "threads"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    loaded = load_model_from_args(args)
    aliases = seed_param_names(loaded.name, loaded.model) if ":" not in loaded.name else {}
    data = _load_data(args, loaded) if args.data else None
    if data_criterion(args.criterion) is not None:
        if data is None:
            raise ConfigError(f"--criterion {args.criterion} scores channels from data: pass --data SPEC")
        prepare_data_criterion(loaded.model, args.criterion, data.train_loader)
    accuracy = {"top1_before": evaluate(loaded.model, data.val_loader).top1} if data is not None else {}
    reconstructing = data is not None and args.reconstruct_batches > 0  # needs the unpruned model kept
    started = time.perf_counter()
    common = dict(
        target_flops=args.target_flops,
        criterion=args.criterion,
        pruned_params=args.pruned_params,
        aliases=aliases,
        inplace=not (args.verify or reconstructing),
        verify=args.verify,
    )
    if args.align == "latency":
        calibrate = args.calibrate and args.runtime == "onnxruntime"
        score = _plan_score(args, data) if data is not None and calibrate and args.speed_slack > 0 else None
        options = LatencyOptions(
            runtime=args.runtime,
            threads=args.threads,
            batch_size=args.latency_batch_size,
            cache_dir=args.latency_cache,
            calibrate=calibrate,
            speed_slack=args.speed_slack,
        )
        planner = LatencyPlanner(options, score=score)
        result = prune(loaded.model, loaded.example_input(), planner=planner, **common)
        plan = result.plan_info
        log(
            f"latency-aware plan for {plan.runtime}, batch {plan.batch_size}, {plan.threads} threads: blocks "
            f"{plan.blocks}, estimated speedup {plan.estimated_speedup:.2f}x"
            + (
                f", measured kernel speedup {plan.calibration['measured_speedup']:.2f}x"
                if plan.calibration and "measured_speedup" in plan.calibration
                else ""
            )
        )
    else:
        result = prune(
            loaded.model,
            loaded.example_input(),
            round_to=args.round_to,
            global_ranking=args.global_ranking,
            **common,
        )
    report = result.report
    log(
        f"pruned in {report.seconds:.3f} s from model built to pruned model ready (total {time.perf_counter() - started:.3f} s)"
    )
    if data is not None:
        accuracy.update(_recover_accuracy(args, result, loaded.model if reconstructing else None, data))
    if args.output:
        save_model(
            args.output,
            result.model,
            loaded.name,
            loaded.kwargs,
            input_size=loaded.input_size,
            extra={
                "pruning": {
                    "target_flops": args.target_flops,
                    "criterion": args.criterion,
                    "round_to": args.round_to,
                    "align": args.align,
                    "pruned_params": args.pruned_params,
                    "bn_recalibration_batches": accuracy.get("bn_batches", 0),
                    "reconstruction_batches": accuracy.get("reconstruction_batches", 0),
                }
            },
        )
        log(f"saved pruned model to {args.output}")
    payload = {
        "model": loaded.name,
        "macs_before": report.macs_before,
        "macs_after": report.macs_after,
        "params_before": report.params_before,
        "params_after": report.params_after,
        "flops_reduction": report.flops_reduction,
        "verified": report.verified,
        "max_abs_diff": report.max_abs_diff,
        "groups_pruned": report.groups_pruned,
        "groups_skipped": report.groups_skipped,
        "seconds": report.seconds,
        "round_to": args.round_to,
        "align": args.align,
        "output": args.output,
        **accuracy,
    }
    if args.align == "latency":
        payload["latency"] = result.plan_info.as_dict()
    if args.json:
        payload["skipped"] = report.skipped
        payload["channels"] = report.channels
        emit_json(payload)
        return 0 if report.verified in (None, True) else 1
    print(
        table(
            ["", "MACs", "params"],
            [
                ["before", human(report.macs_before), human(report.params_before)],
                ["after", human(report.macs_after), human(report.params_after)],
            ],
        )
    )
    print(
        f"\nMACs removed: {report.flops_reduction:.2%}; groups pruned: {report.groups_pruned}, kept: {report.groups_skipped}"
    )
    for name, reason in list(report.skipped.items())[:10]:
        print(f"  kept {name}: {reason}")
    if report.verified is not None:
        print(f"verify: {'OK' if report.verified else 'FAILED'} (max |diff| {report.max_abs_diff:.2e})")
    if accuracy:
        print(
            f"top-1 on {accuracy['val_images']} validation images: {accuracy['top1_before']:.2f}% before pruning, "
            f"{accuracy['top1_after_prune']:.2f}% right after"
        )
        if "top1_after_bn_recalibration" in accuracy:
            print(
                f"top-1 after batch-norm re-estimation on {accuracy['bn_batches']} training batches: "
                f"{accuracy['top1_after_bn_recalibration']:.2f}%"
            )
        if "top1_after_reconstruction" in accuracy:
            print(
                f"top-1 after reconstructing {accuracy['reconstructed_layers']} layers on "
                f"{accuracy['reconstruction_batches']} training batches: {accuracy['top1_after_reconstruction']:.2f}%"
            )
    return 0 if report.verified in (None, True) else 1


def _plan_score(args: argparse.Namespace, data: DataBundle):
    """Top-1 of a candidate plan on the first 1000 validation images, after BN re-estimation as ``--bn-batches`` says."""
    from torchslim.engine.cached import cache_batches, top1_score
    from torchslim.latency.calibration import SCORE_SAMPLES

    def recalibrate(candidate) -> None:
        recalibrate_batch_norm(candidate, data.train_loader, num_batches=args.bn_batches)

    batches = cache_batches(data.val_loader, SCORE_SAMPLES, "cpu")
    return top1_score(batches, recalibrate if args.bn_batches > 0 else None)


def _recover_accuracy(args: argparse.Namespace, pruned, original, data: DataBundle) -> dict:
    """Top-1 of the pruned model as is, after batch-norm re-estimation (unless ``--bn-batches 0``), and after
    reconstruction from ``original``, the unpruned model (unless ``--reconstruct-batches 0``)."""
    model = pruned.model
    after = evaluate(model, data.val_loader)
    result = {"val_images": after.samples, "top1_after_prune": after.top1, "bn_batches": 0}
    if args.bn_batches > 0:
        started = time.perf_counter()
        result["bn_batches"] = recalibrate_batch_norm(model, data.train_loader, num_batches=args.bn_batches)
        log(
            f"batch-norm statistics re-estimated on {result['bn_batches']} training batches "
            f"in {time.perf_counter() - started:.2f} s"
        )
        result["top1_after_bn_recalibration"] = evaluate(model, data.val_loader).top1
    if original is not None:
        report = reconstruct(
            original,
            model,
            data.train_loader,
            group_set=pruned.group_set,
            mask=pruned.plan.mask,
            num_batches=args.reconstruct_batches,
        )
        log(
            f"reconstructed {len(report.layers)} layers on {report.batches} training batches in {report.seconds:.2f} s "
            f"(mean relative output error {report.mean_error_before:.3f} -> {report.mean_error_after:.3f})"
        )
        result.update(
            {
                "reconstruction_batches": report.batches,
                "reconstructed_layers": len(report.layers),
                "top1_after_reconstruction": evaluate(model, data.val_loader).top1,
            }
        )
    return result
