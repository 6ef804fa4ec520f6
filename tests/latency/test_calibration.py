"""Calibrating the latency table with whole-model ORT profiles (tiny models at 32x32, no timing claims)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchslim.latency.calibration as calibration_module
from tests.helpers.latency import SyntheticTable, plan_builder
from torchslim.errors import PruningError
from torchslim.latency.calibration import (
    LatencyProblem,
    ProfileSettings,
    choose_by_score,
    profile_plan,
    tilted_plan,
)
from torchslim.latency.cost import LatencyModel
from torchslim.latency.layers import layer_configs
from torchslim.latency.ort_profile import CalibrationError
from torchslim.latency.planner import LatencyOptions, LatencyPlanner
from torchslim.pruning import prune
from torchslim.pruning.prune import analyze
from torchslim.pruning.search import search_uniform


def test_profile_plan_times_every_layer_of_the_model(wide, tmp_path):
    group_set = analyze(wide, torch.randn(1, 3, 32, 32))
    unpruned = np.zeros(len(group_set.roots), dtype=bool)
    in_model, kernel_sum = profile_plan(
        wide, group_set, unpruned, ProfileSettings(32, batch=2, threads=1, runs=3), tmp_path
    )
    assert set(in_model) == set(layer_configs(wide, 32))  # every conv and the Linear (a Gemm node)
    assert all(ms > 0 for ms in in_model.values())
    assert kernel_sum >= sum(in_model.values())


def test_profile_plan_of_a_pruned_plan_matches_padded_nodes(wide, tmp_path):
    group_set = analyze(wide, torch.randn(1, 3, 32, 32))
    mask = np.zeros(len(group_set.roots), dtype=bool)
    mask[group_set.groups[0].units[:12]] = True  # 48 -> 36 channels: ORT pads them to its block
    in_model, _ = profile_plan(
        wide, group_set, mask, ProfileSettings(32, batch=1, threads=1, runs=2), tmp_path
    )
    assert set(in_model) == set(layer_configs(wide, 32))


def test_prune_for_latency_keeps_the_fastest_profiled_plan(wide, tmp_path):
    example = torch.randn(1, 3, 32, 32)
    result = prune(
        wide,
        example,
        target_flops=0.4,
        tolerance=0.02,
        planner=LatencyPlanner(LatencyOptions(table=SyntheticTable(tmp_path))),
    )
    calibration = result.plan_info.calibration
    profiles = calibration["profiles"]
    assert [p["plan"] for p in profiles[:2]] == ["unpruned", "uniform"] and len(profiles) >= 2
    pruned = [p["measured_ms"] for p in profiles if not p["plan"].startswith("unpruned")]
    assert calibration["chosen_ms"] == min(pruned)  # the fastest of all profiles, repeats included
    unpruned = [p["measured_ms"] for p in profiles if p["plan"].startswith("unpruned")]
    assert len(unpruned) == 2 and calibration["base_ms"] == min(unpruned) > 0
    candidates = [
        p for p in profiles if not p["plan"].startswith("unpruned") and not p["plan"].endswith("(again)")
    ]
    assert sum(p["plan"].endswith("(again)") for p in profiles) == min(3, len(candidates)) + 1
    assert abs(result.report.flops_reduction - 0.4) <= 0.02
    assert result.model(example).shape == (1, 10)
    plain = prune(
        wide,
        example,
        target_flops=0.4,
        tolerance=0.02,
        planner=LatencyPlanner(LatencyOptions(table=SyntheticTable(tmp_path), calibrate=False)),
    )
    assert plain.plan_info.calibration is None


def _stem_width_plans(wide):
    """Three plans of ``wide`` that keep 48, 32 and 16 stem channels (the stem's own group only)."""

    group_set, builder = plan_builder(wide, torch.randn(1, 3, 32, 32))
    stem = next(g for g in builder.sizes if group_set.groups[g].sources[0] == "stem.0")
    plans = {
        kept: builder.build({g: kept if g == stem else n for g, n in builder.sizes.items()})
        for kept in (48, 32, 16)
    }
    return group_set, plans


def test_choose_by_score_takes_the_best_score_within_the_speed_slack(wide):
    group_set, plans = _stem_width_plans(wide)
    candidates = [("fast", plans[16], 1.00), ("near", plans[32], 1.015), ("slow", plans[48], 1.10)]
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    widths = []

    def stem_width(pruned):  # a score that prefers wider stems: the slow plan would win if it were scored
        widths.append(pruned.stem[0].out_channels)
        return float(pruned.stem[0].out_channels)

    (label, plan, ms), record = choose_by_score(candidates, wide, group_set, stem_width, speed_slack=0.02)
    assert (label, ms) == ("near", 1.015) and plan is plans[32]
    assert sorted(widths) == [16, 32] and [r["plan"] for r in record] == [
        "fast",
        "near",
    ]  # "slow" is not scored
    assert all(torch.equal(before[k], v) for k, v in wide.state_dict().items())  # scored on copies
    (label, _, _), record = choose_by_score(candidates, wide, group_set, stem_width, speed_slack=0.0)
    assert label == "fast" and len(record) == 1
    with pytest.raises(PruningError, match="returned nan for the fast plan"):
        choose_by_score(candidates, wide, group_set, lambda pruned: float("nan"), speed_slack=0.02)


def test_prune_for_latency_with_a_score_keeps_the_best_scored_near_fastest_plan(wide, tmp_path):
    example = torch.randn(1, 3, 32, 32)
    seen = []

    def narrow_stem(pruned):  # prefers the plan that keeps the fewest stem channels
        seen.append(pruned.stem[0].out_channels)
        return -float(pruned.stem[0].out_channels)

    result = prune(
        wide,
        example,
        target_flops=0.4,
        tolerance=0.02,
        planner=LatencyPlanner(
            LatencyOptions(table=SyntheticTable(tmp_path), speed_slack=1.0), score=narrow_stem
        ),
    )
    calibration = result.plan_info.calibration
    assert calibration["chosen_by"] == "score" and len(calibration["scores"]) == len(seen) >= 1
    best = max(calibration["scores"], key=lambda entry: entry["score"])
    assert calibration["chosen"] == best["plan"] and calibration["chosen_ms"] == best["measured_ms"]
    assert result.model.stem[0].out_channels == min(seen)
    fastest = min(p["measured_ms"] for p in calibration["profiles"] if not p["plan"].startswith("unpruned"))
    assert all(entry["measured_ms"] <= 2.0 * fastest for entry in calibration["scores"])
    with pytest.warns(UserWarning, match="plan score was not used"):
        plain = prune(
            wide,
            example,
            target_flops=0.4,
            tolerance=0.02,
            planner=LatencyPlanner(
                LatencyOptions(table=SyntheticTable(tmp_path), calibrate=False), score=narrow_stem
            ),
        )
    assert plain.plan_info.calibration is None


def test_a_model_calibration_cannot_match_is_planned_from_the_table_with_a_warning(
    wide, tmp_path, monkeypatch
):

    def unmatched(nodes, configs, pad=16):
        raise CalibrationError("layer fc has no node in the profile")

    monkeypatch.setattr(calibration_module, "match_nodes", unmatched)
    with pytest.warns(UserWarning, match="latency calibration skipped: layer fc has no node"):
        result = prune(
            wide,
            torch.randn(1, 3, 32, 32),
            target_flops=0.4,
            tolerance=0.02,
            planner=LatencyPlanner(LatencyOptions(table=SyntheticTable(tmp_path))),
        )
    assert result.plan_info.calibration == {"error": "layer fc has no node in the profile"}
    assert abs(result.report.flops_reduction - 0.4) <= 0.02


def test_tilted_plan_prunes_high_resolution_groups_more_within_the_spread(tmp_path):
    import torchvision

    model = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10).eval()
    example = torch.randn(1, 3, 64, 64)
    group_set, builder = plan_builder(model, example, allowed_block=8)
    latency_model = LatencyModel(group_set, model, 64, SyntheticTable(tmp_path))
    uniform = search_uniform(builder, 0.5, 0.01)
    problem = LatencyProblem(builder, latency_model, model, target=0.5, tolerance=0.01, spread=0.25)
    tilted = tilted_plan(problem, uniform, tilt=0.5)
    assert abs(tilted.reduction - 0.5) <= 0.01
    fraction = lambda plan, g: plan.keep[g] / builder.sizes[g]  # noqa: E731
    resolution = {
        g.index: latency_model.configs[g.sources[0]].height // latency_model.configs[g.sources[0]].stride
        for g in group_set.prunable()
    }
    high, low = max(resolution.values()), min(resolution.values())
    assert all(fraction(tilted, g) <= fraction(uniform, g) for g, r in resolution.items() if r == high)
    assert all(fraction(tilted, g) >= fraction(uniform, g) for g, r in resolution.items() if r == low)
    assert tilted.keep != uniform.keep
    step = 8 / min(builder.sizes.values())  # one alignment step of slack on the smallest group
    assert all(abs(fraction(tilted, g) - fraction(uniform, g)) <= 0.25 + step for g in builder.sizes)
