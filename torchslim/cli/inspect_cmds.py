"""``models``, ``params`` and ``flops``: look at a model before pruning it."""

from __future__ import annotations

import argparse
import re

from torchslim.errors import ConfigError
from torchslim.models import list_models, namespace_models, seed_param_names
from torchslim.models.zoo import MODELS, resolve_spec
from torchslim.pruning.counting import human, profile_model

from .common import add_command, add_model_arguments, load_model_from_args
from .output import emit_json, log, table


def add_parsers(subparsers) -> None:
    models = add_command(
        subparsers,
        "models",
        run_models,
        help="List the models torchslim can build.",
        description="List the built-in models and aliases.",
    )
    models.add_argument("--torchvision", action="store_true", help="Also list every torchvision classifier.")
    models.add_argument(
        "--timm",
        metavar="PATTERN",
        help="Also list the timm models matching PATTERN (shell-style, e.g. 'convnext_*'; a bare word "
        "matches names containing it; '*' lists all). Needs timm: pip install torchslim[timm].",
    )
    params = add_command(
        subparsers,
        "params",
        run_params,
        help="List every parameter's name and shape, marking those a pruned_params regex selects.",
        description="Print every parameter of a model with its shape (and, for the seed's models, the seed's "
        "name for it), so you can write a pruned_params regex. With --pattern, parameters the regex matches "
        "(re.match, against either name) are marked and counted.",
    )
    add_model_arguments(params)
    params.add_argument("--pattern", help="A pruned_params regular expression to test.")
    flops = add_command(
        subparsers,
        "flops",
        run_flops,
        help="Count MACs, parameters and fp32 size of a model.",
        description="Count multiply-accumulates (MACs) of conv and linear layers for one image at the given "
        "input size, the number of parameters, and the fp32 model size. Works on built and saved models.",
    )
    add_model_arguments(flops)
    flops.add_argument("--per-layer", action="store_true", help="Also print every conv/linear layer's cost.")


def run_models(args: argparse.Namespace) -> int:
    aliases = MODELS.aliases()
    entries = [
        {
            "name": n,
            "aliases": sorted(a for a, t in aliases.items() if t == n),
            "description": MODELS.get(n).description,
        }
        for n in MODELS.list()
    ]
    names = list_models(include_torchvision=args.torchvision)
    timm_names = namespace_models("timm", args.timm) if args.timm else []
    names += timm_names
    if args.json:
        emit_json({"models": entries, "names": names})
        return 0
    print(
        table(
            ["name", "aliases", "description"],
            [[e["name"], ", ".join(e["aliases"]), e["description"]] for e in entries],
            "lll",
        )
    )
    if args.torchvision:
        print("\ntorchvision classifiers (use torchvision:<name>):")
        print("  " + ", ".join(n.split(":", 1)[1] for n in names if n.startswith("torchvision:")))
    if args.timm:
        print(f"\ntimm models matching {args.timm!r} (use timm:<name>): {len(timm_names)}")
        print("  " + (", ".join(n.split(":", 1)[1] for n in timm_names) or "none"))
    return 0


def run_params(args: argparse.Namespace) -> int:
    loaded = load_model_from_args(args)
    try:
        pattern = re.compile(args.pattern) if args.pattern else None
    except re.error as error:
        raise ConfigError(f"--pattern {args.pattern!r} is not a valid regex: {error}") from None
    seed = seed_param_names(loaded.name, loaded.model) if _known(loaded.name) else {}
    rows = []
    for name, parameter in loaded.model.named_parameters():
        alias = seed.get(name, "")
        matched = bool(pattern and (pattern.match(name) or (alias and pattern.match(alias))))
        rows.append({"name": name, "seed_name": alias, "shape": list(parameter.shape), "matched": matched})
    count = sum(r["matched"] for r in rows)
    if args.json:
        emit_json({"model": loaded.name, "params": rows, "matched": count})
        return 0
    headers = ["", "name", "seed name", "shape"] if seed else ["", "name", "shape"]
    body = [
        (["*" if r["matched"] else "", r["name"]] + ([r["seed_name"]] if seed else []) + [tuple(r["shape"])])
        for r in rows
    ]
    print(table(headers, body, "l" * len(headers)))
    if pattern:
        print(f"\n{count} of {len(rows)} parameters match {args.pattern!r} (marked *)")
    return 0


def run_flops(args: argparse.Namespace) -> int:
    loaded = load_model_from_args(args)
    profile = profile_model(loaded.model, loaded.input_size)
    payload = {"model": loaded.name, **profile.as_dict()}
    if loaded.manifest is not None:
        payload["model_path"] = args.model_path
    if args.json:
        if args.per_layer:
            payload["layers"] = [vars(layer) for layer in profile.layers]
        emit_json(payload)
        return 0
    log(f"{loaded.name} at {loaded.input_size}x{loaded.input_size}")
    if args.per_layer:
        rows = [
            [c.name, c.kind, "x".join(map(str, c.output_shape)), human(c.macs), human(c.params)]
            for c in profile.layers
        ]
        print(table(["layer", "kind", "output", "MACs", "params"], rows, "lllrr"))
        print()
    print(
        table(
            ["model", "input", "MACs", "params", "size (fp32)"],
            [
                [
                    loaded.name,
                    profile.input_size,
                    human(profile.macs),
                    human(profile.params),
                    human(profile.size_bytes, "B"),
                ]
            ],
        )
    )
    return 0


def _known(name: str) -> bool:
    try:
        return resolve_spec(name).seed_names is not None
    except Exception:  # user factories and other models simply have no seed names
        return False
