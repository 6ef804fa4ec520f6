"""The CLI run in this process, with its exit code and captured output."""

from __future__ import annotations

from torchslim.cli.main import main


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    """``torchslim ARGV`` through ``main`` in this process: (exit code, stdout, stderr) of this run only."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
