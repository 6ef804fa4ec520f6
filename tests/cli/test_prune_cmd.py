"""``torchslim prune``: prune, verify, save, reload; errors; --align latency; top-1 with --data (checked
against the models' accuracy counted here)."""

from __future__ import annotations

import json

import torch

from tests.helpers import TINY_MODEL
from tests.helpers.cli import run_main
from tests.helpers.latency import staircase_cost
from tests.helpers.models import accuracy_of
from tests.helpers.tiny_models import tiny_net
from torchslim.cli import main
from torchslim.data import build_loaders
from torchslim.latency.table import LatencyTable
from torchslim.models import build_model, load_model, load_pretrained
from torchslim.pruning.counting import profile_model
from torchslim.pruning.planner import DEFAULT_ROUND_TO
from torchslim.pruning.prune import prune
from torchslim.recovery.batch_norm import batch_norm_layers


def test_prune_mobilenet_v2_verify_json_and_reload(capsys, tmp_path):
    output = tmp_path / "pruned"
    code, out, err = run_main(
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
        assert after < before and after % DEFAULT_ROUND_TO == 0
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)

    # And the saved model is usable by the other commands.
    code, out, err = run_main(capsys, ["flops", "--model-path", str(output), "--json"])
    assert code == 0, err
    assert json.loads(out)["macs"] == payload["macs_after"]


def test_prune_text_output_with_pruned_params(capsys):
    code, out, err = run_main(
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
    code, out, err = run_main(
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
    code, _, err = run_main(
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
    code, _, err = run_main(
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
    code, _, err = run_main(
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
    code, _, err = run_main(
        capsys, ["prune", "--model", "nope_net", "--target-flops", "0.5", "--output", str(output)]
    )
    assert code == 4 and "unknown model 'nope_net'" in err
    assert not output.exists()


def test_prune_cli_align_latency_plans_calibrates_and_saves(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(LatencyTable, "_measure", lambda self, config: staircase_cost(config, block=8))
    monkeypatch.setattr(LatencyTable, "for_probes", lambda self: self)
    code = main(
        [
            "prune",
            "--model",
            TINY_MODEL,
            "--target-flops",
            "0.5",
            "--align",
            "latency",
            "--input-size",
            "32",
            "--latency-cache",
            str(tmp_path / "cache"),
            "--threads",
            "1",
            "--verify",
            "--output",
            str(tmp_path / "out"),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    assert payload["align"] == "latency" and payload["verified"] is True
    assert abs(payload["flops_reduction"] - 0.5) <= 0.01
    assert payload["latency"]["blocks"] == {"conv": 8, "depthwise": 8, "linear": 8}
    assert payload["latency"]["calibration"]["profiles"][0]["plan"] == "unpruned"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["pruning"]["align"] == "latency"


def test_prune_cli_align_latency_with_data_scores_the_near_fastest_plans(
    capsys, tmp_path, monkeypatch, tiny_fmnist
):
    monkeypatch.setattr(LatencyTable, "_measure", lambda self, config: staircase_cost(config, block=8))
    monkeypatch.setattr(LatencyTable, "for_probes", lambda self: self)
    argv = [
        "prune",
        "--model",
        TINY_MODEL,
        "--target-flops",
        "0.5",
        "--align",
        "latency",
        "--input-size",
        "32",
        "--latency-cache",
        str(tmp_path / "cache"),
        "--threads",
        "1",
        "--data",
        tiny_fmnist,
        "--bn-batches",
        "2",
        "--reconstruct-batches",
        "0",
        "--speed-slack",
        "0.5",
        "--json",
    ]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    calibration = json.loads(out)["latency"]["calibration"]
    assert calibration["chosen_by"] == "score" and calibration["scores"]
    assert calibration["chosen"] == max(calibration["scores"], key=lambda entry: entry["score"])["plan"]
    assert main(argv[:-3] + ["--speed-slack", "-0.1"]) == 2
    assert "--speed-slack must be >= 0" in capsys.readouterr().err


def test_prune_cli_align_latency_rejects_global_ranking(capsys):
    code = main(
        ["prune", "--model", TINY_MODEL, "--target-flops", "0.5", "--align", "latency", "--global-ranking"]
    )
    _, err = capsys.readouterr()
    assert code == 2 and "--global-ranking" in err and len(err.strip().splitlines()) == 1


def test_global_ranking_per_mac_is_the_apis_per_mac_ranking(tiny_net_weights, capsys):
    argv = ["prune", "--model", TINY_MODEL, "--num-classes", "10", "--pretrained", tiny_net_weights]
    argv += ["--target-flops", "0.4", "--round-to", "1", "--json"]
    assert main([*argv, "--global-ranking", "per-mac", "--verify"]) == 0
    cut = json.loads(capsys.readouterr().out)["groups_cut"]
    model = tiny_net()
    model.load_state_dict(torch.load(tiny_net_weights))
    expected = prune(model, torch.zeros(1, 3, 32, 32), target_flops=0.4, round_to=1, global_ranking="per_mac")
    assert cut == {name: list(entry) for name, entry in expected.report.cut.items()}
    assert main([*argv, "--global-ranking", "per-flop"]) == 2
    err = capsys.readouterr().err
    assert "--global-ranking expected per-mac or no value, got 'per-flop'" in err


def test_prune_command_reports_top1_before_after_and_after_re_estimation(
    tiny_fmnist, tiny_net_weights, tmp_path, capsys
):
    output = tmp_path / "pruned"
    common = ["prune", "--model", TINY_MODEL, "--num-classes", "10", "--pretrained", tiny_net_weights]
    common += ["--target-flops", "0.4"]
    common += ["--round-to", "2", "--json", "--data", tiny_fmnist, "--val-limit", "64", "--batch-size", "32"]
    assert main([*common, "--bn-batches", "3", "--reconstruct-batches", "0", "--output", str(output)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["val_images"] == 64 and payload["bn_batches"] == 3
    model, manifest = load_model(output, trusted=TINY_MODEL)
    assert manifest["input_size"] == 32  # Fashion-MNIST's size, as no --input-size was given
    assert manifest["pruning"]["bn_recalibration_batches"] == 3
    assert all(
        int(bn.num_batches_tracked) == 3 for bn in batch_norm_layers(model)
    )  # saved after re-estimation
    # Each reported top-1 is that model's accuracy, counted here: the unpruned model, the same plan
    # pruned here, and the saved (re-estimated) model.
    val = build_loaders(tiny_fmnist, batch_size=32, image_size=32, val_limit=64).val_loader
    unpruned = load_pretrained(tiny_net(), tiny_net_weights)
    pruned = prune(unpruned, torch.zeros(1, 3, 32, 32), target_flops=0.4, round_to=2).model
    assert payload["top1_before"] == accuracy_of(unpruned, val)
    assert payload["top1_after_prune"] == accuracy_of(pruned, val)
    assert payload["top1_after_bn_recalibration"] == accuracy_of(model, val)

    assert main([*common, "--bn-batches", "0", "--reconstruct-batches", "0"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["bn_batches"] == 0 and "top1_after_bn_recalibration" not in off
    assert (off["top1_before"], off["top1_after_prune"]) == (
        payload["top1_before"],
        payload["top1_after_prune"],
    )


def test_prune_command_reconstructs_and_saves_the_refitted_model(
    tiny_fmnist, tiny_net_weights, tmp_path, capsys
):
    common = ["prune", "--model", TINY_MODEL, "--num-classes", "10", "--pretrained", tiny_net_weights]
    common += ["--target-flops", "0.4"]
    common += ["--round-to", "2", "--json", "--data", tiny_fmnist, "--val-limit", "64", "--batch-size", "32"]
    common += ["--bn-batches", "2"]
    capsys.readouterr()
    assert main([*common, "--reconstruct-batches", "2", "--output", str(tmp_path / "on")]) == 0
    on = json.loads(capsys.readouterr().out)
    assert on["reconstruction_batches"] == 2 and on["reconstructed_layers"] >= 1
    assert main([*common, "--reconstruct-batches", "0", "--output", str(tmp_path / "off")]) == 0
    off = json.loads(capsys.readouterr().out)
    assert "top1_after_reconstruction" not in off
    assert (
        off["top1_after_bn_recalibration"] == on["top1_after_bn_recalibration"]
    )  # same weights, same plan, same statistics

    refitted, manifest = load_model(tmp_path / "on", trusted=TINY_MODEL)
    plain, _ = load_model(tmp_path / "off", trusted=TINY_MODEL)
    assert manifest["pruning"]["reconstruction_batches"] == 2
    refitted_state, plain_state = refitted.state_dict(), plain.state_dict()
    assert any(
        not torch.equal(v, plain_state[k]) for k, v in refitted_state.items()
    )  # saved: the refitted one
    val = build_loaders(tiny_fmnist, batch_size=32, image_size=32, val_limit=64).val_loader
    assert on["top1_after_reconstruction"] == accuracy_of(refitted, val)
    assert off["top1_after_bn_recalibration"] == accuracy_of(plain, val)
    assert main([*common, "--reconstruct-batches", "-1"]) == 2
    assert "--reconstruct-batches must be >= 0" in capsys.readouterr().err
