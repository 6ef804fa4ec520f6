"""UniformPruneStrategy: when it plans for latency, and a latency-aware run that weighs accuracy."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

import torchslim.latency.planner as latency_planner
from tests.helpers.cli import run_main
from tests.helpers.configs import compression_config, sequential_model_config, uniform_strategy, write_config
from tests.helpers.latency import staircase_cost
from tests.helpers.models import accuracy_of
from torchslim.compress.strategies import UniformPruneStrategy, uniform
from torchslim.config import parse_config
from torchslim.engine.cached import top1_score
from torchslim.latency.calibration import calibrated_minimize
from torchslim.latency.planner import LatencyPlanner
from torchslim.latency.table import LatencyTable


def test_uniform_strategy_plans_with_latency_only_when_configured(wide):
    def strategy(align: str, **extra) -> UniformPruneStrategy:
        changes = {"pruners.pruner_1.align": align, "pruners.pruner_1.runtime": "eager"}
        strategies = {"u": uniform_strategy(start_epoch=0, **extra)}
        config = parse_config(compression_config(strategies=strategies, changes=changes))
        return UniformPruneStrategy("u", config.strategies["u"], config)

    assert not strategy("round_to").latency_aware
    assert strategy("round_to", latency_target=0.3).latency_aware
    aware = strategy("latency")
    assert aware.latency_aware
    context = SimpleNamespace(val_loader=None, device="cpu", after_prune=None)
    planner = aware.latency_planner(context)
    assert (
        isinstance(planner, LatencyPlanner) and planner.options.runtime == "eager" and planner.score is None
    )


def record_calibrations(monkeypatch) -> list:
    """The CalibrationInfo of every calibrated latency plan made in this process."""
    infos = []

    def calibrated(*args, **kwargs):
        result = calibrated_minimize(*args, **kwargs)
        infos.append(result[2])
        return result

    monkeypatch.setattr(latency_planner, "calibrated_minimize", calibrated)
    return infos


def record_plan_scores(monkeypatch) -> list[tuple[float, float, int]]:
    """(score given, top-1 counted here on the same model and batches, images) for every plan scored."""
    scores = []

    def top1_score_recorded(batches, before=None):
        score = top1_score(batches, before)

        def recorded(model):
            value = score(model)  # re-estimates the plan's batch norms, then evaluates
            scores.append((value, accuracy_of(model, batches), sum(len(labels) for _, labels in batches)))
            return value

        return recorded

    monkeypatch.setattr(uniform, "top1_score", top1_score_recorded)
    return scores


def test_latency_aware_run_weighs_validation_accuracy_among_measured_plans(
    brightness_fmnist, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(LatencyTable, "_measure", lambda self, config: staircase_cost(config, block=8))
    monkeypatch.setattr(LatencyTable, "for_probes", lambda self: self)
    infos, scores = record_calibrations(monkeypatch), record_plan_scores(monkeypatch)
    config = sequential_model_config(
        brightness_fmnist,
        tmp_path / "ckpt",
        **{
            "pruners.pruner_1.align": "latency",
            "pruners.pruner_1.latency_speed_slack": 1.0,
            "strategies.uniform_pruning_strategy.start_epoch": 0,
            "compressor.epoch": 1,
        },
    )
    code, out, err = run_main(
        capsys, ["compress", "--config", str(write_config(tmp_path / "c.yaml", config)), "--json"]
    )
    assert code == 0, err
    (event,) = json.loads(out)["events"]
    plan = event["latency_plan"]
    assert plan["chosen_by"] == "score" and plan["scores"]
    best = max(plan["scores"], key=lambda entry: entry["score"])
    assert plan["chosen"] == best["plan"]
    # Each score is the plan's top-1 on all 50 validation images, as counted here on the scored model.
    assert [entry["score"] for entry in plan["scores"]] == [given for given, _, _ in scores]
    assert all(
        given == pytest.approx(counted, abs=1e-9) and images == 50 for given, counted, images in scores
    )
    # The measured speedup is the unpruned model's kernel time over the chosen plan's.
    (info,) = infos
    assert best["measured_ms"] == info.chosen_ms
    assert info.base_ms == min(p["measured_ms"] for p in info.profiles if p["plan"].startswith("unpruned"))
    assert plan["measured_speedup"] == info.base_ms / info.chosen_ms
    assert abs(event["flops_reduction"] - 0.5) <= 0.01
    config["compressor"]["checkpoint_path"] = str(tmp_path / "ckpt2")  # the human summary says the same
    code, out, err = run_main(
        capsys, ["compress", "--config", str(write_config(tmp_path / "c2.yaml", config))]
    )
    assert code == 0, err
    assert re.search(
        r"latency-aware plan: the [a-z0-9. ]+ plan, measured kernel speedup [0-9.]+x, chosen by "
        r"validation top-1 among the near-fastest \([a-z0-9. ]+ [0-9.]+%",
        out,
    )  # plans are re-measured: any may win
