"""Tests for ``torchslim prune``: prune from the command line, verify, save, reload."""

from __future__ import annotations

import json

import torch

from torchslim.cli import main
from torchslim.models import build_model, load_model
from torchslim.pruning.counting import profile_model
from torchslim.pruning.planner import DEFAULT_ROUND_TO


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prune_mobilenet_v2_verify_json_and_reload(capsys, tmp_path):
    output = tmp_path / "pruned"
    code, out, err = run(
        capsys,
        [
            "prune",
            "--model",
            "mobilenet_v2",
            "--input-size",
            "64",
            "--num-classes",
            "10",
            "--target-flops",
            "0.5",
            "--verify",
            "--json",
            "--output",
            str(output),
        ],
    )
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["model"] == "mobilenet_v2"
    assert 0.49 <= payload["flops_reduction"] <= 0.51
    assert payload["verified"] is True
    assert payload["max_abs_diff"] is not None and payload["max_abs_diff"] < 1e-3
    assert payload["output"] == str(output) and payload["round_to"] == DEFAULT_ROUND_TO
    assert payload["groups_pruned"] > 0
    assert "classifier.1" in payload["skipped"]

    # The numbers agree with an independent count on the unpruned and the reloaded model.
    base = build_model("mobilenet_v2", num_classes=10)
    assert payload["macs_before"] == profile_model(base, 64).macs
    assert payload["params_before"] == sum(p.numel() for p in base.parameters())
    model, manifest = load_model(output)
    assert manifest["model"] == "mobilenet_v2" and manifest["input_size"] == 64
    assert manifest["kwargs"] == {"num_classes": 10}
    assert manifest["pruning"]["target_flops"] == 0.5 and manifest["pruning"]["criterion"] == "l1_norm"
    assert profile_model(model, 64).macs == payload["macs_after"]
    assert sum(p.numel() for p in model.parameters()) == payload["params_after"]
    assert 1 - payload["macs_after"] / payload["macs_before"] == payload["flops_reduction"]
    for layer, (before, after) in payload["channels"].items():
        module = dict(model.named_modules())[layer]
        assert after == (module.out_channels if hasattr(module, "out_channels") else module.out_features)
        assert after < before and after % 8 == 0
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)

    # And the saved model is usable by the other commands.
    code, out, err = run(capsys, ["flops", "--model-path", str(output), "--json"])
    assert code == 0, err
    assert json.loads(out)["macs"] == payload["macs_after"]


def test_prune_text_output_with_pruned_params(capsys):
    code, out, err = run(
        capsys,
        [
            "prune",
            "--model",
            "MobileNet",
            "--input-size",
            "32",
            "--num-classes",
            "10",
            "--target-flops",
            "0.3",
            "--pruned-params",
            ".*_sep_weights",
            "--verify",
        ],
    )
    assert code == 0, err
    assert "MACs removed: " in out and "verify: OK" in out
    removed = float(out.split("MACs removed: ")[1].split("%")[0]) / 100
    assert abs(removed - 0.3) <= 0.01
    assert "kept fc: model output" in out
    assert "not selected by pruned_params" in out  # e.g. the stem conv


def test_bad_target_flops_exits_2_and_writes_nothing(capsys, tmp_path):
    output = tmp_path / "never"
    code, out, err = run(
        capsys,
        [
            "prune",
            "--model",
            "mobilenet_v2",
            "--input-size",
            "64",
            "--num-classes",
            "10",
            "--target-flops",
            "1.5",
            "--json",
            "--output",
            str(output),
        ],
    )
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--target-flops must be in (0, 1), got 1.5" in lines[0]
    assert "Traceback" not in err
    assert not output.exists()
    assert list(tmp_path.iterdir()) == []


def test_prune_errors_are_one_line_with_their_exit_codes(capsys, tmp_path):
    output = tmp_path / "never"
    # An unknown criterion is a config error (2).
    code, _, err = run(
        capsys,
        [
            "prune",
            "--model",
            "mobilenet_v1",
            "--target-flops",
            "0.5",
            "--criterion",
            "nope",
            "--output",
            str(output),
        ],
    )
    assert code == 2 and "--criterion 'nope' is unknown" in err and len(err.strip().splitlines()) == 1
    # An unreachable request is a pruning error (5).
    code, _, err = run(
        capsys,
        [
            "prune",
            "--model",
            "mobilenet_v1",
            "--input-size",
            "32",
            "--num-classes",
            "10",
            "--target-flops",
            "0.9",
            "--pruned-params",
            "conv2_1_sep_weights",
            "--output",
            str(output),
        ],
    )
    assert code == 5 and "unreachable" in err and "Traceback" not in err
    # A pattern that matches nothing names the parameters it could have matched.
    code, _, err = run(
        capsys,
        [
            "prune",
            "--model",
            "mobilenet_v1",
            "--input-size",
            "32",
            "--num-classes",
            "10",
            "--target-flops",
            "0.5",
            "--pruned-params",
            "nothing",
            "--output",
            str(output),
        ],
    )
    assert code == 5 and "matches no parameter" in err and "conv1_weights" in err
    # An unknown model is a model error (4).
    code, _, err = run(
        capsys, ["prune", "--model", "nope_net", "--target-flops", "0.5", "--output", str(output)]
    )
    assert code == 4 and "unknown model 'nope_net'" in err
    assert not output.exists()
