"""``sensitivity``: measure how much each prunable group's channels matter, per removal ratio."""

from __future__ import annotations

import argparse
import time

import torch

from torchslim.criteria import CRITERIA, DEFAULT_CRITERION, data_criterion, list_criteria
from torchslim.data import DEFAULT_DATA_SPEC, DataBundle, build_loaders
from torchslim.engine.cached import METRICS, cache_batches
from torchslim.engine.device import resolve_device
from torchslim.errors import ConfigError
from torchslim.models import load_model
from torchslim.pruning.prune import analyze
from torchslim.recovery.batch_norm import recalibrate_batch_norm
from torchslim.reporting.plots import plot_sensitivities
from torchslim.sensitivity.scan import group_scores, scan_sensitivity, shard_groups
from torchslim.sensitivity.table import (
    DEFAULT_RATIOS,
    SensitivityTable,
    merge_tables,
    model_fingerprint,
    open_table,
    table_rows,
)

from . import flags
from .common import (
    LoadedModel,
    add_command,
    add_model_arguments,
    data_help,
    load_model_from_args,
    registered_names,
)
from .output import emit_json, log, table


def add_parsers(subparsers) -> None:
    parser = add_command(
        subparsers,
        "sensitivity",
        run_sensitivity,
        help="Measure each prunable group's sensitivity: metric loss when it alone loses channels.",
        description="For every prunable group and every ratio, remove that group's lowest-scored channels "
        "alone, measure top-1 (or top-5) on a validation slice, and record the relative loss. The table is "
        "written to --output (JSON) after every measurement, so a killed scan continues where it stopped "
        "when run again with the same arguments; --shard splits the groups between machines and --merge "
        "joins their files. SensitivePruneStrategy reads the same file (sensitivities_file).",
        json_help="Print the table as one JSON object on stdout.",
    )
    add_model_arguments(parser)
    _add_scan_arguments(parser)
    parser.add_argument(
        "--shard",
        type=flags.shard,
        default=None,
        metavar="K/N",
        help="Scan only every N-th group starting at the K-th (to split a scan between machines).",
    )
    parser.add_argument(
        "--output",
        type=flags.output_file,
        help="Sensitivity table file (JSON); reused and completed when it matches.",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="FILE",
        help="Merge these table files into --output instead of scanning.",
    )
    parser.add_argument(
        "--plot", type=flags.output_file, help="Write the sensitivity curves to this PNG file."
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default).")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")


def _add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """What is measured: data, ratios, criterion, metric, groups."""
    parser.add_argument(
        "--data", default=DEFAULT_DATA_SPEC, help=data_help(f"; default {DEFAULT_DATA_SPEC}.")
    )
    parser.add_argument(
        "--val-limit",
        type=flags.positive_int,
        default=1000,
        help="Validation samples to measure on (the first N; default 1000).",
    )
    parser.add_argument(
        "--batch-size", type=flags.positive_int, default=256, help="Evaluation batch size (default 256)."
    )
    parser.add_argument(
        "--ratios",
        type=flags.fraction,
        nargs="+",
        default=list(DEFAULT_RATIOS),
        help="Fractions of each group's channels to remove (default 0.1 ... 0.9).",
    )
    parser.add_argument(
        "--criterion",
        type=flags.criterion,
        default=DEFAULT_CRITERION,
        help=f"Which channels go first (default {DEFAULT_CRITERION}): {registered_names(CRITERIA)}.",
    )
    parser.add_argument(
        "--criterion-batches",
        type=flags.positive_int,
        default=8,
        help="Training batches fed to a data-driven criterion "
        f"({', '.join(name for name in list_criteria() if data_criterion(name) is not None)}).",
    )
    parser.add_argument(
        "--bn-batches",
        type=flags.non_negative_int,
        default=0,
        help="Re-estimate batch-norm statistics on N training batches after each removal, as the compressor "
        "does after pruning (train.bn_recalibration_batches); a table for SensitivePruneStrategy in such a "
        "run needs it. Default 0: off (faster).",
    )
    parser.add_argument(
        "--metric", default="top1_acc", choices=sorted(METRICS), help="Metric (default top1_acc)."
    )
    parser.add_argument(
        "--pruned-params",
        default=None,
        help="Regex over parameter names (or seed names) selecting the groups to scan.",
    )


def run_sensitivity(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    result = _merge(args) if args.merge else _scan(args)
    return _report(args, result, started)


def _merge(args: argparse.Namespace) -> SensitivityTable:
    if not args.output:
        raise ConfigError("--merge needs --output FILE for the merged table")
    result = merge_tables([SensitivityTable.load(path) for path in args.merge])
    result.save(args.output)
    log(f"merged {len(args.merge)} tables into {args.output}")
    return result


def _load(args: argparse.Namespace) -> tuple[DataBundle, LoadedModel]:
    """The data first (its classes and size are the model's defaults), then the model."""
    size_hint = args.input_size
    if size_hint is None and getattr(args, "model_path", None):
        size_hint = load_model(args.model_path, trusted=args.model)[1].get("input_size")
    data = build_loaders(
        args.data, batch_size=args.batch_size, image_size=size_hint, val_limit=args.val_limit, num_workers=0
    )
    if args.num_classes is None and not getattr(args, "model_path", None):
        args.num_classes = data.num_classes
    return data, load_model_from_args(args)


def _scan(args: argparse.Namespace) -> SensitivityTable:
    device = resolve_device(args.device)
    data, loaded = _load(args)
    model = loaded.model.to(device).eval()
    example = torch.zeros(1, 3, data.image_size, data.image_size, device=device)
    group_set = analyze(model, example, args.pruned_params, loaded.seed_aliases())
    batches = cache_batches(data.val_loader, args.val_limit, device)
    samples = sum(len(t) for _, t in batches)
    train = data.train_loader if data_criterion(args.criterion) is not None else None
    scores = group_scores(
        group_set, model, args.criterion, train, device=device, max_batches=args.criterion_batches
    )
    fresh = SensitivityTable(
        model=loaded.name,
        fingerprint=model_fingerprint(model),
        criterion=args.criterion,
        metric=args.metric,
        data=f"{args.data} val[:{samples}] at {data.image_size}px",
        samples=samples,
        recalibrated=args.bn_batches > 0,
    )
    result = open_table(args.output, fresh)
    groups = shard_groups(group_set, args.shard)
    selected = len(groups) if groups is not None else len(group_set.prunable())
    log(
        f"{loaded.name}: {selected} groups x {len(args.ratios)} ratios on {samples} validation samples "
        f"({device})"
    )
    scan_sensitivity(
        model,
        group_set,
        scores,
        batches,
        result,
        ratios=args.ratios,
        path=args.output,
        groups=groups,
        progress=not args.no_progress and not args.json,
        after_mask=_recalibration(args, data, device),
    )
    if args.output:
        log(f"sensitivity table written to {args.output}")
    return result


def _recalibration(args: argparse.Namespace, data: DataBundle, device):
    """The after-removal hook: batch-norm re-estimation on ``--bn-batches`` training batches, or None."""
    if args.bn_batches == 0:
        return None

    def after_mask(model) -> None:
        recalibrate_batch_norm(model, data.train_loader, num_batches=args.bn_batches, device=device)

    return after_mask


def _report(args: argparse.Namespace, result: SensitivityTable, started: float) -> int:
    if args.plot:
        plot_sensitivities(result, args.plot)
        log(f"sensitivity curves written to {args.plot}")
    if args.json:
        payload = result.to_dict()
        payload["output"] = args.output
        payload["seconds"] = time.perf_counter() - started
        emit_json(payload)
        return 0
    ratio_keys = sorted({k for r in result.groups.values() for k in r}, key=float)
    base = "-" if result.base_metric is None else f"{result.base_metric:.2f}%"
    print(f"base {result.metric}: {base} on {result.data} (criterion {result.criterion})")
    print("relative loss (%) when the group alone loses that fraction of its channels:\n")
    print(table(["group", "channels", *ratio_keys], table_rows(result)))
    print(f"\n{time.perf_counter() - started:.1f} s")
    return 0
