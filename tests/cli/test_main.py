"""The command line as a whole: help for every subcommand, exit codes of model errors, --debug."""

from __future__ import annotations

import re

import pytest

from torchslim.cli import main
from torchslim.cli.main import build_parser
from torchslim.errors import ModelError

KEY_OPTIONS = {
    "models": ["--torchvision", "--json"],
    "params": ["--model", "--model-path", "--pattern", "--num-classes", "--pretrained", "--json"],
    "flops": ["--model", "--model-path", "--input-size", "--num-classes", "--per-layer", "--json"],
    "prune": [
        "--model",
        "--target-flops",
        "--criterion",
        "--pruned-params",
        "--round-to",
        "--global-ranking",
        "--output",
        "--verify",
        "--json",
    ],
}


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return list(action.choices)


def test_main_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: torchslim" in out and "--version" in out
    for command in ("models", "params", "flops", "prune"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


def test_every_subcommand_is_listed():
    assert {"models", "params", "flops", "prune"} <= set(subcommands())


@pytest.mark.parametrize("command", sorted(set(subcommands()) | set(KEY_OPTIONS)))
def test_subcommand_help(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: torchslim {command}")
    for option in KEY_OPTIONS.get(command, []):
        assert option in out, f"{command} --help does not mention {option}"


def test_no_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    assert "usage: torchslim" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["flops", "params"])
def test_unknown_model_exit_code_4_one_line(capsys, command):
    code = main([command, "--model", "resnet43", "--json"])
    captured = capsys.readouterr()
    assert code == 4
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"torchslim {command}: error: unknown model 'resnet43'")
    assert "did you mean resnet34" in lines[0]
    assert "Traceback" not in captured.err


def test_missing_model_and_missing_model_path_are_model_errors(capsys, tmp_path):
    assert main(["flops"]) == 4
    assert "no model given" in capsys.readouterr().err
    assert main(["flops", "--model-path", str(tmp_path / "absent")]) == 4
    assert "does not exist" in capsys.readouterr().err
    assert main(["flops", "--model-path", str(tmp_path)]) == 4  # a directory without a manifest
    err = capsys.readouterr().err
    assert "manifest" in err and len(err.strip().splitlines()) == 1


def test_debug_flag_keeps_the_traceback():

    with pytest.raises(ModelError, match="unknown model"):
        main(["--debug", "flops", "--model", "resnet43"])
