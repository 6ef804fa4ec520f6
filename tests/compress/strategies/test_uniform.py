"""UniformPruneStrategy: when it plans for latency, and a latency-aware run that weighs accuracy."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

from tests.helpers.cli import run_main
from tests.helpers.configs import sequential_model_config, write_config
from tests.helpers.latency import staircase_cost
from torchslim.latency.planner import LatencyPlanner


def test_uniform_strategy_plans_with_latency_only_when_configured(wide):
    from torchslim.compress.strategies import UniformPruneStrategy
    from torchslim.config import parse_config

    def strategy(align: str, **extra) -> UniformPruneStrategy:
        config = parse_config(
            {
                "pruners": {"p": {"class": "StructurePruner", "align": align, "runtime": "eager"}},
                "strategies": {
                    "u": {
                        "class": "UniformPruneStrategy",
                        "pruner": "p",
                        "target_ratio": 0.4,
                        "pruned_params": ".*",
                        **extra,
                    }
                },
                "compressor": {"epoch": 1, "strategies": ["u"]},
            }
        )
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


def test_latency_aware_run_weighs_validation_accuracy_among_measured_plans(
    brightness_fmnist, tmp_path, capsys, monkeypatch
):

    from torchslim.latency.table import LatencyTable

    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(LatencyTable, "_measure", lambda self, config: staircase_cost(config, block=8))
    monkeypatch.setattr(LatencyTable, "for_probes", lambda self: self)
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
    assert plan["chosen_by"] == "score" and plan["scores"] and plan["measured_speedup"] > 0
    best = max(plan["scores"], key=lambda entry: entry["score"])
    assert plan["chosen"] == best["plan"] and all(0 <= entry["score"] <= 100 for entry in plan["scores"])
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
