"""``torchslim sensitivity``: scan, reuse, shards and merge, the plot."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import TINY_MODEL
from tests.helpers.models import calibrated
from tests.helpers.tiny_models import TinyNet
from torchslim.cli.main import main
from torchslim.sensitivity.table import (
    FORMAT,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sensitivity_command_scans_resumes_merges_and_plots(tiny_fmnist, tmp_path, capsys):
    weights = tmp_path / "tiny.pt"
    torch.save(calibrated(TinyNet(num_classes=10)).state_dict(), weights)
    output, plot = tmp_path / "sens.json", tmp_path / "curves.png"
    common = [
        "sensitivity",
        "--model",
        TINY_MODEL,
        "--pretrained",
        str(weights),
        "--data",
        tiny_fmnist,
        "--val-limit",
        "64",
        "--ratios",
        "0.25",
        "0.5",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*common, "--output", str(output), "--plot", str(plot), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["format"] == FORMAT and payload["samples"] == 64 and len(payload["groups"]) >= 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = output.read_text()
    assert main([*common, "--output", str(output)]) == 0  # everything is there: nothing is measured again
    out = capsys.readouterr().out
    assert output.read_text() == written and "relative loss" in out and "0.25" in out
    for k in (1, 2):
        assert main([*common, "--shard", f"{k}/2", "--output", str(tmp_path / f"p{k}.json")]) == 0
    merged = tmp_path / "merged.json"
    assert (
        main(
            [
                "sensitivity",
                "--merge",
                str(tmp_path / "p1.json"),
                str(tmp_path / "p2.json"),
                "--output",
                str(merged),
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert json.loads(merged.read_text())["groups"] == json.loads(written)["groups"]
    assert main([*common, "--criterion", "nope"]) == 2
