"""Tests for the inspection commands: ``torchslim models``, ``params`` and ``flops``, and ``--help``."""

from __future__ import annotations

import json
import re

import pytest

from torchslim.cli import main
from torchslim.models import build_model


def run_json(capsys, argv: list[str]) -> dict:
    """Run the CLI, require exit 0 and exactly one JSON object (one line) on stdout."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got {len(lines)}: {captured.out[:300]}"
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return payload


# --------------------------------------------------------------------------- flops


@pytest.mark.parametrize(
    "model, canonical, macs, params",
    [
        ("mobilenet_v1", "mobilenet_v1", 568.7e6, 4.23e6),
        ("mobilenet_v2", "mobilenet_v2", 300.8e6, 3.505e6),
        ("resnet34", "resnet34", 3.66e9, 21.80e6),
        ("MobileNetV2", "mobilenet_v2", 300.8e6, 3.505e6),
    ],
)
def test_flops_json_matches_reference_counts(capsys, model, canonical, macs, params):
    payload = run_json(capsys, ["flops", "--model", model, "--json"])
    assert payload["model"] == canonical
    assert payload["input_size"] == 224
    assert payload["macs"] == pytest.approx(macs, rel=0.01)
    assert payload["params"] == pytest.approx(params, rel=0.01)
    assert payload["size_bytes"] >= 4 * payload["params"]
    assert "layers" not in payload


def test_flops_json_small_input_num_classes_and_per_layer(capsys):
    payload = run_json(
        capsys,
        [
            "flops",
            "--model",
            "mobilenet_v1",
            "--input-size",
            "32",
            "--num-classes",
            "10",
            "--json",
            "--per-layer",
        ],
    )
    assert payload["input_size"] == 32
    layers = payload["layers"]
    assert len(layers) == 1 + 13 * 2 + 1  # stem, 13 x (depthwise, pointwise), fc
    assert sum(layer["macs"] for layer in layers) == payload["macs"]
    assert layers[-1]["name"] == "fc" and layers[-1]["kind"] == "linear"
    assert layers[-1]["macs"] == 1024 * 10 and layers[-1]["output_shape"] == [10]
    assert layers[1]["kind"] == "depthwise"
    # The stem: 3x3 conv, 3 -> 32 channels, stride 2: 16x16 outputs.
    assert layers[0]["macs"] == 16 * 16 * 32 * 3 * 9
    # At 224 every conv costs (224/32)^2 = 49 times as much; the classifier does not change.
    assert payload["macs"] - 10240 == pytest.approx((568.7e6 - 1024 * 1000) / 49, rel=0.01)


def test_flops_text_output(capsys):
    assert main(["flops", "--model", "mobilenet_v1", "--input-size", "32"]) == 0
    captured = capsys.readouterr()
    assert "mobilenet_v1" in captured.out and "MACs" in captured.out and "params" in captured.out
    assert "4.23M" in captured.out  # parameters do not depend on input size


# --------------------------------------------------------------------------- params


def test_params_json_with_pattern(capsys):
    payload = run_json(capsys, ["params", "--model", "mobilenet_v2", "--pattern", ".*conv.*", "--json"])
    model = build_model("mobilenet_v2")
    names = [n for n, _ in model.named_parameters()]
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    assert payload["model"] == "mobilenet_v2"
    assert [row["name"] for row in payload["params"]] == names
    assert set(payload["params"][0]) == {"name", "seed_name", "shape", "matched"}
    assert all(row["shape"] == shapes[row["name"]] for row in payload["params"])
    # Computed here without the seed-name table: PyTorch names containing "conv", plus the stem
    # (features.0) and last conv (features.18), whose seed names are conv1_1_* and conv9_*.
    by_torch_name = {n for n in names if re.match(".*conv.*", n)}
    stem_and_last = {n for n in names if n.startswith(("features.0.", "features.18."))}
    expected = by_torch_name | stem_and_last
    assert len(by_torch_name) == 150 and len(stem_and_last) == 6
    assert payload["matched"] == len(expected) == len(names) - 2
    assert {row["name"] for row in payload["params"] if row["matched"]} == expected
    unmatched = [row for row in payload["params"] if not row["matched"]]
    assert [row["name"] for row in unmatched] == ["classifier.1.weight", "classifier.1.bias"]
    assert [row["seed_name"] for row in unmatched] == ["fc10_weights", "fc10_offset"]
    stem = next(row for row in payload["params"] if row["name"] == "features.0.0.weight")
    assert stem["seed_name"] == "conv1_1_weights" and stem["matched"] and stem["shape"] == [32, 3, 3, 3]


def test_params_json_seed_pattern_counts(capsys):
    payload = run_json(capsys, ["params", "--model", "MobileNetV2", "--pattern", ".*[r|d]_weights", "--json"])
    matched = [row for row in payload["params"] if row["matched"]]
    assert payload["matched"] == len(matched) == 33
    # Independently: expand convs are conv.0.0 in blocks 2..17, linear convs the last conv of each block.
    expand = [row for row in matched if re.fullmatch(r"features\.\d+\.conv\.0\.0\.weight", row["name"])]
    assert len(expand) == 16
    assert all(row["shape"][2:] == [1, 1] for row in matched)


def test_params_without_pattern_matches_nothing(capsys):
    payload = run_json(capsys, ["params", "--model", "resnet34", "--num-classes", "10", "--json"])
    assert payload["matched"] == 0
    assert len(payload["params"]) == len(list(build_model("resnet34", num_classes=10).parameters()))
    fc = next(row for row in payload["params"] if row["name"] == "fc.weight")
    assert fc["shape"] == [10, 512]


def test_params_text_output_counts(capsys):
    assert main(["params", "--model", "mobilenet_v1", "--pattern", ".*_sep_weights"]) == 0
    out = capsys.readouterr().out
    total = len(list(build_model("mobilenet_v1").parameters()))
    assert f"13 of {total} parameters match '.*_sep_weights'" in out
    assert "conv2_1_sep_weights" in out


def test_params_invalid_regex_is_a_config_error(capsys):
    assert main(["params", "--model", "mobilenet_v1", "--pattern", "(["]) == 2
    err = capsys.readouterr().err
    assert "is not a valid regex" in err and "Traceback" not in err


# --------------------------------------------------------------------------- models


def test_models_json(capsys):
    payload = run_json(capsys, ["models", "--json"])
    entries = {e["name"]: e for e in payload["models"]}
    assert sorted(entries) == ["mobilenet_v1", "mobilenet_v2", "resnet34"]
    assert entries["mobilenet_v1"]["aliases"] == ["mobilenet", "mobilenetv1"]
    assert entries["mobilenet_v2"]["aliases"] == ["mobilenetv2"]
    assert payload["names"] == ["mobilenet_v1", "mobilenet_v2", "resnet34"]
    with_tv = run_json(capsys, ["models", "--torchvision", "--json"])
    assert "torchvision:resnet18" in with_tv["names"] and len(with_tv["names"]) > 50


# --------------------------------------------------------------------------- help and errors
