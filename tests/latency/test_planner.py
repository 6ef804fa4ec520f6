"""Latency measurement, the latency lookup table and latency-aware planning (tiny models, no timing asserts)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from torchslim.errors import ConfigError, PruningError
from torchslim.export.timing import robust_ms
from torchslim.latency.blocks import allowed_counts, block_from_latencies, detect_blocks, group_blocks
from torchslim.latency.compare import compare_latency, steady_rounds
from torchslim.latency.cost import LatencyModel
from torchslim.latency.layers import ConvConfig, layer_configs
from torchslim.latency.planner import LatencyOptions, LatencyPlanner
from torchslim.latency.table import LatencyTable
from torchslim.pruning.exchange import _filled_moves, _Step, minimize_cost
from torchslim.pruning.plan import PlanBuilder
from torchslim.pruning.prune import analyze, prune, rank_units
from torchslim.pruning.search import search_uniform


class Wide(nn.Module):
    """Stem, a depthwise-separable block, a residual pair and a classifier, with widths of 48-96."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 48, 3, 2, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU())
        self.dw = nn.Sequential(
            nn.Conv2d(48, 48, 3, 1, 1, groups=48, bias=False), nn.BatchNorm2d(48), nn.ReLU()
        )
        self.pw = nn.Sequential(nn.Conv2d(48, 96, 1, bias=False), nn.BatchNorm2d(96), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(96, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(64, 96, 3, 1, 1, bias=False), nn.BatchNorm2d(96))
        self.fc = nn.Linear(96, 10)

    def forward(self, x):
        x = self.pw(self.dw(self.stem(x)))
        x = (x + self.b(self.a(x))).relu()
        return self.fc(x.mean((2, 3)))


def staircase_cost(config: ConvConfig, block: int = 16) -> float:
    """A synthetic runtime that pads every channel count up to ``block`` (like ONNX Runtime's NCHWc)."""
    pad = lambda c: math.ceil(c / block) * block  # noqa: E731
    out_hw = config.height * config.width / config.stride**2
    per_group_in = 1 if config.depthwise else pad(config.in_channels)
    return 1e-6 * config.batch * out_hw * pad(config.out_channels) * per_group_in * config.kernel**2 + 0.01


class SyntheticTable(LatencyTable):
    """A LatencyTable whose 'measurements' come from a formula: deterministic and instant."""

    def __init__(self, tmp_path, block: int = 16, **kwargs) -> None:
        super().__init__("onnxruntime", threads=2, cache_dir=tmp_path, **kwargs)
        self.block = block

    def _measure(self, config: ConvConfig) -> float:
        return staircase_cost(config, self.block)

    def for_probes(self) -> LatencyTable:
        return self


@pytest.fixture
def wide():
    torch.manual_seed(0)
    return Wide().eval()


def test_conv_config_key_channels_and_macs():
    config = ConvConfig(32, 64, 3, 2, 1, 16, 16)
    assert config.key() == "c32x64k3s2g1h16w16b1"
    assert config.macs() == 8 * 8 * 64 * 32 * 9
    dw = ConvConfig(32, 32, 3, 1, 32, 16, 16)
    assert dw.depthwise and dw.with_channels(24, 99) == ConvConfig(24, 24, 3, 1, 24, 16, 16)


def test_layer_configs_record_input_sizes(wide):
    configs = layer_configs(wide, 32)
    assert configs["stem.0"] == ConvConfig(3, 48, 3, 2, 1, 32, 32)
    assert configs["dw.0"] == ConvConfig(48, 48, 3, 1, 48, 16, 16)
    assert configs["fc"] == ConvConfig(96, 10, 1, 1, 1, 1, 1, linear=True)


@pytest.mark.parametrize("block", [8, 16, 32])
def test_block_from_latencies_finds_the_staircase(block):
    rng = np.random.default_rng(0)
    latencies = {
        c: 0.1 + 0.01 * math.ceil(c / block) * block + rng.normal(0, 1e-4) for c in range(64, 161, 4)
    }
    latencies[100] *= 3  # one noisy sample does not change the answer
    assert block_from_latencies(latencies) == block


def test_block_from_latencies_smooth_curve_is_block_one():
    assert block_from_latencies({c: 0.1 + 0.01 * c for c in range(64, 161, 4)}) in (1, 4)


def test_robust_ms_is_the_fast_end():
    assert robust_ms([10.0, 1.0, 1.1, 1.2, 50.0]) == 1.1


def test_latency_table_caches_per_machine_and_runtime(tmp_path):
    table = SyntheticTable(tmp_path)
    config = ConvConfig(16, 16, 3, 1, 1, 8, 8)
    value = table.lookup(config)
    assert table.measured == 1 and config in table
    path = table.save()
    data = json.loads(path.read_text())
    assert data["entries"][config.key()] == value and data["threads"] == 2 and "machine" in data
    again = LatencyTable("onnxruntime", threads=2, cache_dir=tmp_path, measure=False)
    assert again.lookup(config) == value and again.measured == 0
    with pytest.raises(KeyError):
        again.lookup(ConvConfig(8, 8, 1, 1, 1, 4, 4))
    other_threads = LatencyTable("onnxruntime", threads=1, cache_dir=tmp_path, measure=False)
    assert len(other_threads) == 0


def test_latency_table_ignores_a_table_of_another_machine(tmp_path):
    table = SyntheticTable(tmp_path)
    table.lookup(ConvConfig(16, 16, 3, 1, 1, 8, 8))
    path = table.save()
    data = json.loads(path.read_text())
    data["machine"] = "some other cpu"
    path.write_text(json.dumps(data))
    assert len(LatencyTable("onnxruntime", threads=2, cache_dir=tmp_path)) == 0


@pytest.mark.parametrize("runtime", ["onnxruntime", "eager"])
def test_latency_table_really_measures_a_tiny_layer(tmp_path, runtime):
    table = LatencyTable(runtime, threads=1, cache_dir=tmp_path, repeats=2, warmup=1)
    assert table.lookup(ConvConfig(8, 8, 3, 1, 1, 8, 8)) > 0.0


def test_unknown_runtime_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="runtime"):
        LatencyTable("tensorrt", cache_dir=tmp_path)


def test_detect_blocks_reads_the_synthetic_runtime(tmp_path):
    assert detect_blocks(SyntheticTable(tmp_path, block=16), passes=1) == {
        "conv": 16,
        "depthwise": 16,
        "linear": 16,
    }
    assert detect_blocks(SyntheticTable(tmp_path / "b8", block=8), passes=1)["conv"] == 8


def _builder(model, example, allowed_block=None):
    group_set = analyze(model, example)
    scores = rank_units(group_set, model, "l1_norm")
    order = {g: np.argsort(s, kind="stable") for g, s in scores.items()}
    sizes = {g: len(o) for g, o in order.items()}
    allowed = allowed_counts(sizes, dict.fromkeys(sizes, allowed_block)) if allowed_block else None
    return group_set, PlanBuilder(group_set, order, 8, allowed=allowed)


def test_plan_builder_with_allowed_counts(wide):
    group_set, builder = _builder(wide, torch.randn(1, 3, 32, 32), allowed_block=16)
    group = next(iter(builder.sizes))
    values = builder.allowed[group]
    assert all(v % 16 == 0 or v == builder.sizes[group] for v in values)
    assert builder.aligned(group, 21) == 16 and builder.aligned(group, 0) == 16
    assert builder.step(group, 16, +1) == 32 and builder.step(group, 16, -1) is None
    plan = search_uniform(builder, 0.5, 0.03)
    assert abs(plan.reduction - 0.5) <= 0.03
    assert all(k in builder.allowed[g] for g, k in plan.keep.items())


def test_plan_builder_without_allowed_is_round_to(wide):
    _, builder = _builder(wide, torch.randn(1, 3, 32, 32))
    group = next(iter(builder.sizes))
    assert builder.allowed == {}
    assert builder.step(group, 16, +1) == 24 and builder.step(group, 8, -1) is None
    assert builder.aligned(group, 21) == 24


def test_minimize_latency_lowers_the_estimate_at_the_same_macs(wide, tmp_path):
    example = torch.randn(1, 3, 32, 32)
    group_set, builder = _builder(wide, example, allowed_block=8)
    model_latency = LatencyModel(group_set, wide, 32, SyntheticTable(tmp_path))
    start = search_uniform(builder, 0.5, 0.02)
    better = minimize_cost(builder, model_latency, start, 0.5, 0.02)
    assert model_latency.estimate(better.mask) <= model_latency.estimate(start.mask)
    assert abs(better.reduction - 0.5) <= 0.01 + 1e-9 or better is start


def test_filled_moves_give_back_a_big_step_in_small_ones(tmp_path):
    import torchvision

    model = torchvision.models.mobilenet_v2(
        width_mult=0.5, num_classes=10
    ).eval()  # many groups of many widths
    example = torch.randn(1, 3, 32, 32)
    group_set, builder = _builder(model, example, allowed_block=8)
    model_latency = LatencyModel(group_set, model, 32, SyntheticTable(tmp_path))
    start = search_uniform(builder, 0.4, 0.02)
    start_ms = model_latency.estimate(start.mask)
    singles = []
    for group, kept in start.keep.items():
        for direction in (-1, 1):
            count = builder.step(group, kept, direction)
            if count is not None:
                candidate = builder.build({**start.keep, group: count})
                singles.append(_Step(group, count, candidate, model_latency.estimate(candidate.mask)))
    step = lambda s: abs(s.plan.reduction - start.reduction)  # noqa: E731
    biggest = max((s for s in singles if s.count < start.keep[s.group]), key=step)
    tolerance = 0.01  # the latency planner's default
    assert step(biggest) > tolerance / 2  # the removal alone leaves the target
    filled = list(_filled_moves(builder, start, start_ms, singles, [biggest], start.reduction, tolerance / 2))
    assert len(filled) == 1
    for candidate in filled:
        assert abs(candidate.reduction - start.reduction) <= tolerance / 2
        changed = {g for g in start.keep if candidate.keep[g] != start.keep[g]}
        removed = [g for g in changed if candidate.keep[g] < start.keep[g]]
        assert len(removed) == 1 and len(changed) >= 2  # one step off, given back elsewhere


def test_latency_model_base_matches_table_sum(wide, tmp_path):
    group_set = analyze(wide, torch.randn(1, 3, 32, 32))
    table = SyntheticTable(tmp_path)
    model_latency = LatencyModel(group_set, wide, 32, table)
    expected = sum(staircase_cost(c) for c in layer_configs(wide, 32).values())
    assert model_latency.base() == pytest.approx(expected)


def test_group_blocks_take_the_largest_member_block(wide):
    group_set = analyze(wide, torch.randn(1, 3, 32, 32))
    blocks = group_blocks(group_set, {"conv": 8, "depthwise": 16, "linear": 1})
    by_source = {group_set.groups[g].sources[0]: b for g, b in blocks.items()}
    assert by_source["stem.0"] == 16  # feeds the depthwise conv
    assert by_source["a.0"] == 8


def test_prune_for_latency_hits_the_macs_target_with_aligned_counts(wide, tmp_path):
    example = torch.randn(1, 3, 32, 32)
    result = prune(
        wide,
        example,
        target_flops=0.4,
        verify=True,
        tolerance=0.02,
        planner=LatencyPlanner(LatencyOptions(table=SyntheticTable(tmp_path))),
    )
    assert abs(result.report.flops_reduction - 0.4) <= 0.02
    assert result.report.verified
    assert result.plan_info.blocks == {"conv": 16, "depthwise": 16, "linear": 16}
    assert result.plan_info.estimated_ms < result.plan_info.estimated_base_ms
    for name, (before, after) in result.report.channels.items():
        assert after % 16 == 0 or after == before, name
    assert result.model(example).shape == (1, 10)
    assert wide.stem[0].out_channels == 48  # not in place by default


def test_prune_for_latency_latency_target_and_fixed_align(wide, tmp_path):
    example = torch.randn(1, 3, 32, 32)
    table = SyntheticTable(tmp_path)
    result = prune(
        wide,
        example,
        tolerance=0.05,
        target_flops=None,
        planner=LatencyPlanner(LatencyOptions(align=8, table=table), latency_target=0.4),
    )
    info = result.plan_info
    assert 1 - info.estimated_ms / info.estimated_base_ms >= 0.4 - 0.05
    assert info.blocks == {"all": 8}


def test_prune_for_latency_needs_a_target(wide, tmp_path):
    with pytest.raises(PruningError, match="target"):
        prune(
            wide,
            torch.randn(1, 3, 32, 32),
            target_flops=None,
            planner=LatencyPlanner(LatencyOptions(table=SyntheticTable(tmp_path))),
        )
    with pytest.raises(PruningError, match="latency_target"):
        prune(
            wide,
            torch.randn(1, 3, 32, 32),
            target_flops=None,
            planner=LatencyPlanner(LatencyOptions(table=SyntheticTable(tmp_path)), latency_target=1.5),
        )


@pytest.mark.parametrize("runtime", ["onnxruntime", "eager"])
def test_compare_latency_structure(wide, runtime):
    pruned = prune(wide, torch.randn(1, 3, 32, 32), target_flops=0.4, round_to=8, tolerance=0.05).model
    result = compare_latency(
        {"base": wide, "pruned": pruned}, 32, runtime=runtime, batch_size=2, threads=1, warmup=1, rounds=3
    )
    assert set(result.median_ms) == {"base", "pruned"} and result.speedup["base"] == 1.0
    assert len(result.samples_ms["pruned"]) == 3 and result.median_ms["pruned"] > 0
    assert result.as_dict()["runtime"] == runtime and "samples_ms" not in result.as_dict()


def test_compare_latency_uses_the_steady_rounds(wide, monkeypatch):
    import torchslim.latency.compare as compare
    from torchslim.export import TimingResult

    # Rounds 3 and 4 ran while the machine was slowed down: the base model took 1.6x as long.
    samples = {"base": [4.0, 4.1, 6.5, 6.4, 4.0], "pruned": [2.0, 2.05, 4.0, 4.0, 2.0]}
    monkeypatch.setattr(
        compare,
        "time_interleaved",
        lambda functions, warmup, rounds: {
            label: TimingResult.from_samples(samples[label]) for label in functions
        },
    )
    result = compare_latency({"base": wide, "pruned": wide}, 32, runtime="eager", rounds=5)
    assert (result.rounds_used, result.steady) == (3, True)
    assert result.speedup["pruned"] == pytest.approx(2.0) and result.median_ms["base"] == pytest.approx(4.0)
    assert result.samples_ms["pruned"] == samples["pruned"]  # every round is kept for the record
    samples.update(
        base=[4.0, 6.5, 6.4, 6.5, 6.6], pruned=[2.0, 4.0, 4.0, 4.0, 4.0]
    )  # mostly slow: all rounds
    result = compare_latency({"base": wide, "pruned": wide}, 32, runtime="eager", rounds=5)
    assert (result.rounds_used, result.steady) == (5, False)
    assert result.speedup["pruned"] == pytest.approx(6.5 / 4.0)


def test_steady_rounds_band():
    used, steady = steady_rounds([10.0, 11.2, 11.3, 10.5])
    assert used.tolist() == [True, True, False, True] and steady
    used, steady = steady_rounds([10.0, 20.0, 20.0])
    assert used.all() and not steady


def test_compare_latency_rejects_unknown_runtime(wide):
    with pytest.raises(ConfigError):
        compare_latency({"base": wide}, 32, runtime="tvm", rounds=1)


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
