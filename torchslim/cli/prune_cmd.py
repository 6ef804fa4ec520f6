"""``prune``: prune a model once to a FLOPs target, verify it, and save it."""

from __future__ import annotations

import argparse
import time

from torchslim.criteria import list_criteria
from torchslim.errors import ConfigError
from torchslim.models import save_model, seed_param_names
from torchslim.profile import human
from torchslim.pruner import DEFAULT_ROUND_TO, prune

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
    parser.add_argument("--target-flops", type=float, required=True, help="Fraction of MACs to remove, e.g. 0.5.")
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
        "--round-to", type=int, default=DEFAULT_ROUND_TO, help="Keep channel counts multiples of N (default 8)."
    )
    parser.add_argument(
        "--global-ranking", action="store_true", help="Rank channels across layers instead of one ratio for all."
    )
    parser.add_argument("--output", help="Directory to save the pruned model to.")
    parser.add_argument(
        "--verify", action="store_true", help="Check the pruned model against the unpruned one (correctness oracle)."
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    parser.set_defaults(handler=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    if not 0.0 < args.target_flops < 1.0:
        raise ConfigError(f"--target-flops must be in (0, 1), got {args.target_flops}")
    if args.criterion not in list_criteria():
        raise ConfigError(f"--criterion {args.criterion!r} is unknown; choose from {', '.join(list_criteria())}")
    loaded = load_model_from_args(args)
    aliases = seed_param_names(loaded.name, loaded.model) if ":" not in loaded.name else {}
    started = time.perf_counter()
    result = prune(
        loaded.model,
        loaded.example_input(),
        target_flops=args.target_flops,
        criterion=args.criterion,
        pruned_params=args.pruned_params,
        round_to=args.round_to,
        global_ranking=args.global_ranking,
        aliases=aliases,
        inplace=not args.verify,
        verify=args.verify,
    )
    report = result.report
    log(f"pruned in {report.seconds:.3f} s from model built to pruned model ready (total {time.perf_counter() - started:.3f} s)")
    if args.output:
        save_model(args.output, result.model, loaded.name, loaded.kwargs, input_size=loaded.input_size,
                   extra={"pruning": {"target_flops": args.target_flops, "criterion": args.criterion,
                                      "round_to": args.round_to, "pruned_params": args.pruned_params}})  # fmt: skip
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
        "output": args.output,
    }
    if args.json:
        payload["skipped"] = report.skipped
        payload["channels"] = report.channels
        emit_json(payload)
        return 0 if report.verified in (None, True) else 1
    print(table(
        ["", "MACs", "params"],
        [["before", human(report.macs_before), human(report.params_before)],
         ["after", human(report.macs_after), human(report.params_after)]],
    ))  # fmt: skip
    print(f"\nMACs removed: {report.flops_reduction:.2%}; groups pruned: {report.groups_pruned}, kept: {report.groups_skipped}")
    for name, reason in list(report.skipped.items())[:10]:
        print(f"  kept {name}: {reason}")
    if report.verified is not None:
        print(f"verify: {'OK' if report.verified else 'FAILED'} (max |diff| {report.max_abs_diff:.2e})")
    return 0 if report.verified in (None, True) else 1
