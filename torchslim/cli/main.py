"""Entry point: parse the sub-command, run it, turn user errors into one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from torchslim._version import __version__
from torchslim.engine.distributed import leave_process_group
from torchslim.errors import TorchslimError

from . import (
    bench_cmd,
    compress_cmd,
    demo_cmd,
    eval_cmd,
    export_cmd,
    infer_cmd,
    inspect_cmds,
    prune_cmd,
    quantize_cmd,
    report_cmd,
    sensitivity_cmd,
)
from .common import CommandParser, FlagError

COMMAND_MODULES = [
    inspect_cmds,
    prune_cmd,
    sensitivity_cmd,
    compress_cmd,
    quantize_cmd,
    export_cmd,
    eval_cmd,
    infer_cmd,
    demo_cmd,
    bench_cmd,
    report_cmd,
]


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="torchslim",
        description="torchslim makes image classifiers smaller and faster by structured channel pruning, "
        "fine-tunes them back to accuracy, and exports them for deployment. Run "
        "`torchslim COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"torchslim {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks for errors.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    command = "torchslim"
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        command = f"torchslim {args.command}"
        return int(args.handler(args) or 0)
    except TorchslimError as error:
        if debug:
            raise
        prefix = error.prog if isinstance(error, FlagError) else command
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    finally:
        leave_process_group()
