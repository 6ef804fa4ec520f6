"""``prune``: prune a model once to a FLOPs target, verify it, and save it."""

from __future__ import annotations

import argparse
import time

from torchslim.criteria import data_criterion, prepare_data_criterion
from torchslim.data import DataBundle, build_loaders
from torchslim.engine import evaluate
from torchslim.engine.cached import cache_batches, top1_score
from torchslim.errors import ConfigError
from torchslim.latency.calibration import SCORE_SAMPLES
from torchslim.models import save_model
from torchslim.pruning.counting import human
from torchslim.pruning.explain import explain_groups
from torchslim.pruning.prune import analyze, prune
from torchslim.recovery.batch_norm import DEFAULT_BN_BATCHES, recalibrate_batch_norm
from torchslim.recovery.reconstruction import DEFAULT_RECONSTRUCTION_BATCHES, reconstruct

from . import flags
from .common import LoadedModel, add_command, add_model_arguments, data_help, load_model_from_args
from .output import emit_json, log, table
from .prune_flags import add_latency_arguments, add_pruning_arguments, latency_planner


def add_parsers(subparsers) -> None:
    parser = add_command(
        subparsers,
        "prune",
        run_prune,
        help="Prune a model once (no training) to a FLOPs target and save it.",
        description="Trace the model, find its channel dependency groups, and remove the least important "
        "channels so that MACs drop by --target-flops, keeping channel counts multiples of --round-to. "
        "The pruned model is saved as manifest.json + model.safetensors in --output.",
    )
    add_model_arguments(parser, saved=False)
    add_pruning_arguments(parser, target_required=False)
    parser.add_argument(
        "--explain",
        action="store_true",
        help="Do not prune: say which groups can lose channels, how much of the MACs pruning can remove "
        "at --round-to, and what keeps the other groups whole (ops and layers, with counts).",
    )
    parser.add_argument(
        "--pruned-params",
        default=None,
        help="Regex (re.match) over parameter names or seed names choosing which layers may lose channels "
        "(default: every prunable layer).",
    )
    parser.add_argument(
        "--global-ranking",
        nargs="?",
        const=True,
        default=False,
        type=_ranking,
        metavar="per-mac",
        help="Rank channels across layers instead of one ratio for all; with per-mac, by score per MAC "
        "saved (balances attention heads, MLP and embedding widths).",
    )
    parser.add_argument("--output", type=flags.output_dir, help="Directory to save the pruned model to.")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="Check the pruned model against the unpruned one (correctness oracle).",
    )
    _add_latency_group(parser)
    _add_data_group(parser)


def _ranking(value: str) -> str:
    """``--global-ranking``'s optional value: only ``per-mac`` (prune()'s ``global_ranking="per_mac"``)."""
    if value.replace("_", "-") != "per-mac":
        raise argparse.ArgumentTypeError(f"expected per-mac or no value, got {value!r}")
    return "per_mac"


def _add_latency_group(parser: argparse.ArgumentParser) -> None:
    latency = parser.add_argument_group("latency-aware pruning (--align latency)")
    add_latency_arguments(latency, runtime_help="Runtime to plan for.")
    latency.add_argument(
        "--latency-batch-size",
        type=flags.timing_batch,
        default=1,
        help=f"Batch size to plan for (default 1; at most {flags.MAX_TIMING_BATCH}).",
    )
    latency.add_argument(
        "--speed-slack",
        type=flags.non_negative_float,
        default=0.02,
        help="With --data: among the profiled plans within this fraction of the fastest, keep the one with "
        "the best top-1 after BN re-estimation on up to 1000 validation images (default 0.02; 0: the "
        "fastest).",
    )


def _add_data_group(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("accuracy (needs --data)")
    data.add_argument(
        "--data",
        help=data_help(
            ": report validation top-1 before pruning, right after, and after re-estimating batch-norm "
            "statistics on training batches."
        ),
    )
    data.add_argument(
        "--bn-batches",
        type=flags.non_negative_int,
        default=DEFAULT_BN_BATCHES,
        help="Training batches for batch-norm re-estimation after pruning "
        f"(default {DEFAULT_BN_BATCHES}; 0: off).",
    )
    data.add_argument(
        "--reconstruct-batches",
        type=flags.non_negative_int,
        default=DEFAULT_RECONSTRUCTION_BATCHES,
        help="Training batches to refit, after BN re-estimation, the layers that lost input channels so they "
        f"reproduce the unpruned outputs (least squares; default {DEFAULT_RECONSTRUCTION_BATCHES}; 0: off). "
        "At most as many of their images are used as the memory and compute budgets allow.",
    )
    data.add_argument(
        "--val-limit", type=flags.positive_int, help="Evaluate on the first N validation images only."
    )
    data.add_argument(
        "--batch-size", type=flags.positive_int, default=64, help="Images per batch (default 64)."
    )


def run_prune(args: argparse.Namespace) -> int:
    if args.explain:
        return _explain(args, load_model_from_args(args))
    if args.target_flops is None:
        raise ConfigError("--target-flops is required (or --explain, to see what can be pruned)")
    if args.align == "latency" and args.global_ranking:
        raise ConfigError(
            "--global-ranking does not apply with --align latency (it plans its own allocation)"
        )
    loaded = load_model_from_args(args)
    data = _load_data(args, loaded) if args.data else None
    _prepare_criterion(args, loaded, data)
    accuracy = {"top1_before": evaluate(loaded.model, data.val_loader).top1} if data is not None else {}
    reconstructing = data is not None and args.reconstruct_batches > 0  # needs the unpruned model kept
    started = time.perf_counter()
    result = _prune(args, loaded, data, inplace=not (args.verify or reconstructing))
    log(
        f"pruned in {result.report.seconds:.3f} s from model built to pruned model ready "
        f"(total {time.perf_counter() - started:.3f} s)"
    )
    if data is not None:
        accuracy.update(_recover_accuracy(args, result, loaded.model if reconstructing else None, data))
    if args.output:
        _save(args, loaded, result, accuracy)
    payload = _payload(args, loaded, result, accuracy)
    if args.json:
        emit_json(payload)
    else:
        _print_result(result.report, accuracy)
    return 0 if result.report.verified in (None, True) else 1


def _explain(args: argparse.Namespace, loaded: LoadedModel) -> int:
    group_set = analyze(loaded.model, loaded.example_input(), args.pruned_params, loaded.seed_aliases())
    explanation = explain_groups(group_set, args.round_to)
    if args.json:
        emit_json({"model": loaded.name, "input_size": loaded.input_size, **explanation.as_dict()})
        return 0
    print(
        f"{loaded.name} at {loaded.input_size}x{loaded.input_size}: {explanation.groups} channel groups, "
        f"{explanation.prunable} prunable, their channels carry {explanation.prunable_macs_share:.1%} of MACs"
    )
    print(
        f"pruning every prunable group as far as round_to={args.round_to} allows removes "
        f"{explanation.most_removable:.1%} of MACs"
        + (
            f" ({explanation.narrow} groups are no wider than {args.round_to}: try a smaller --round-to)"
            if explanation.narrow
            else ""
        )
    )
    if explanation.blockers:
        rows = [
            [b.owner or "-", b.reason, b.groups, b.channels, f"{b.macs_share:.1%}"]
            for b in explanation.blockers
        ]
        print("\ngroups kept whole, by what keeps them (MACs: the share their channels carry):")
        print(table(["in module", "reason", "groups", "channels", "MACs"], rows, "llrrr"))
    return 0


def _load_data(args: argparse.Namespace, loaded: LoadedModel) -> DataBundle:
    """The loaders for ``--data``; the model's input size follows the data unless given or saved."""
    size = args.input_size or (loaded.manifest or {}).get("input_size")
    bundle = build_loaders(args.data, batch_size=args.batch_size, image_size=size, val_limit=args.val_limit)
    loaded.input_size = bundle.image_size
    log(f"data: {bundle.description}")
    return bundle


def _prepare_criterion(args: argparse.Namespace, loaded: LoadedModel, data: DataBundle | None) -> None:
    """Feed a data-driven criterion its training batches."""
    if data_criterion(args.criterion) is None:
        return
    if data is None:
        raise ConfigError(f"--criterion {args.criterion} scores channels from data: pass --data SPEC")
    prepare_data_criterion(loaded.model, args.criterion, data.train_loader)


def _prune(args: argparse.Namespace, loaded: LoadedModel, data: DataBundle | None, *, inplace: bool):
    common = dict(
        target_flops=args.target_flops,
        criterion=args.criterion,
        pruned_params=args.pruned_params,
        aliases=loaded.seed_aliases(),
        inplace=inplace,
        verify=args.verify,
    )
    if args.align != "latency":
        return prune(
            loaded.model,
            loaded.example_input(),
            round_to=args.round_to,
            global_ranking=args.global_ranking,
            **common,
        )
    scoring = data is not None and args.calibrate and args.runtime == "onnxruntime" and args.speed_slack > 0
    score = _plan_score(args, data) if scoring else None
    planner = latency_planner(args, args.latency_batch_size, speed_slack=args.speed_slack, score=score)
    result = prune(loaded.model, loaded.example_input(), planner=planner, **common)
    plan = result.plan_info
    measured = (plan.calibration or {}).get("measured_speedup")
    log(
        f"latency-aware plan for {plan.runtime}, batch {plan.batch_size}, {plan.threads} threads: blocks "
        f"{plan.blocks}, estimated speedup {plan.estimated_speedup:.2f}x"
        + (f", measured kernel speedup {measured:.2f}x" if measured is not None else "")
    )
    return result


def _plan_score(args: argparse.Namespace, data: DataBundle):
    """Top-1 of a candidate plan on the first validation images, after BN re-estimation as
    ``--bn-batches`` says."""

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
            f"reconstructed {len(report.layers)} layers on {report.images} images "
            f"({report.batches} training batches) in "
            f"{report.seconds:.2f} s (mean relative output error {report.mean_error_before:.3f} -> "
            f"{report.mean_error_after:.3f})"
        )
        result["reconstruction_batches"] = report.batches
        result["reconstruction_images"] = report.images
        result["reconstructed_layers"] = len(report.layers)
        result["top1_after_reconstruction"] = evaluate(model, data.val_loader).top1
    return result


def _save(args: argparse.Namespace, loaded: LoadedModel, result, accuracy: dict) -> None:
    pruning = {
        "target_flops": args.target_flops,
        "criterion": args.criterion,
        "round_to": args.round_to,
        "align": args.align,
        "pruned_params": args.pruned_params,
        "bn_recalibration_batches": accuracy.get("bn_batches", 0),
        "reconstruction_batches": accuracy.get("reconstruction_batches", 0),
    }
    save_model(
        args.output,
        result.model,
        loaded.name,
        loaded.kwargs,
        input_size=loaded.input_size,
        extra={"pruning": pruning},
    )
    log(f"saved pruned model to {args.output}")


def _payload(args: argparse.Namespace, loaded: LoadedModel, result, accuracy: dict) -> dict:
    report = result.report
    payload = {
        "model": loaded.name,
        **report.totals(),
        "verified": report.verified,
        "max_abs_diff": report.max_abs_diff,
        "groups_skipped": report.groups_skipped,
        "round_to": args.round_to,
        "align": args.align,
        "output": args.output,
        **accuracy,
    }
    if args.align == "latency":
        payload["latency"] = result.plan_info.as_dict()
    payload["skipped"] = report.skipped
    payload["channels"] = report.channels
    payload["groups_cut"] = report.cut
    return payload


def _print_result(report, accuracy: dict) -> None:
    rows = [
        ["before", human(report.macs_before), human(report.params_before)],
        ["after", human(report.macs_after), human(report.params_after)],
    ]
    print(table(["", "MACs", "params"], rows))
    print(
        f"\nMACs removed: {report.flops_reduction:.2%}; groups pruned: {report.groups_pruned}, "
        f"kept: {report.groups_skipped}"
    )
    if report.cut:
        print("groups cut: " + ", ".join(f"{n} {kind}" for kind, n in report.cut_by_kind().items()))
    for name, reason in list(report.skipped.items())[:10]:
        print(f"  kept {name}: {reason}")
    if report.verified is not None:
        print(f"verify: {'OK' if report.verified else 'FAILED'} (max |diff| {report.max_abs_diff:.2e})")
    if accuracy:
        _print_accuracy(accuracy)


def _print_accuracy(accuracy: dict) -> None:
    print(
        f"top-1 on {accuracy['val_images']} validation images: {accuracy['top1_before']:.2f}% before "
        f"pruning, {accuracy['top1_after_prune']:.2f}% right after"
    )
    if "top1_after_bn_recalibration" in accuracy:
        print(
            f"top-1 after batch-norm re-estimation on {accuracy['bn_batches']} training batches: "
            f"{accuracy['top1_after_bn_recalibration']:.2f}%"
        )
    if "top1_after_reconstruction" in accuracy:
        print(
            f"top-1 after reconstructing {accuracy['reconstructed_layers']} layers on "
            f"{accuracy['reconstruction_batches']} training batches: "
            f"{accuracy['top1_after_reconstruction']:.2f}%"
        )
