"""Sensitivity analysis: masking equals pruning, the table file, reuse, resume after a kill, shards and merge,
ratios from a table, the ``sensitivity`` command and its plot. Tiny models and generated data only."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import TinyNet
from torch import nn

from torchslim.cli.main import main
from torchslim.engine.cached import cache_batches, evaluate_batches
from torchslim.errors import PruningError
from torchslim.graph import apply_plan, removed_mask
from torchslim.pruning.prune import analyze
from torchslim.sensitivity.planning import _Curves as Curves
from torchslim.sensitivity.planning import plan_from_sensitivities
from torchslim.sensitivity.scan import _GroupMasker, group_scores, scan_sensitivity, shard_groups
from torchslim.sensitivity.table import (
    FORMAT,
    SensitivityTable,
    merge_tables,
    model_fingerprint,
    open_table,
    ratios_from_delta,
)

TINY_MODEL = f"{Path(__file__).parent / 'tiny_models.py'}:tiny_net"
RATIOS = (0.25, 0.5, 0.75)


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one thread is several times faster than two fighting ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def chain_net(widths=(16, 32, 32, 48), num_classes: int = 5) -> nn.Sequential:
    """conv-BN-ReLU x len(widths), pool, linear: one independent group per conv."""
    layers: list[nn.Module] = []
    channels = 3
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def calibrated(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, BN statistics from one random batch (so outputs are not vanishingly small), eval mode."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 3, 8, 8))
    return model.eval()


def batches_for(model: nn.Module, count: int = 64, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs labelled by the model itself plus noise, so that removing channels measurably costs accuracy."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, 8, 8, generator=generator)
    with torch.no_grad():
        labels = model(images).argmax(1)
    flip = torch.rand(count, generator=generator) < 0.1
    labels[flip] = 0
    return [(images[i : i + 16], labels[i : i + 16]) for i in range(0, count, 16)]


@pytest.fixture
def setup():
    model = calibrated(chain_net())
    group_set = analyze(model, torch.zeros(1, 3, 8, 8))
    scores = group_scores(group_set, model, "l1_norm")
    return model, group_set, scores, batches_for(model)


def fresh_table(model: nn.Module, **changes) -> SensitivityTable:
    values = {
        "model": "chain",
        "fingerprint": model_fingerprint(model),
        "criterion": "l1_norm",
        "metric": "top1_acc",
        "data": "random val[:64]",
        "samples": 64,
        **changes,
    }
    return SensitivityTable(**values)


# ----------------------------------------------------------------------------- masking


def test_masking_a_group_computes_the_physically_pruned_function():
    """The scan's zeroing of consumer inputs is exactly pruning, on a model with a residual-coupled group."""
    model = calibrated(TinyNet(num_classes=4, width=16))
    group_set = analyze(model, torch.zeros(1, 3, 8, 8))
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    checked = 0
    for group in group_set.prunable():
        units = np.arange(0, group.size, 3)
        pruned = apply_plan(copy.deepcopy(model), group_set, removed_mask(group_set, {group.index: units}))
        masker = _GroupMasker(model, group_set, group)
        original = model(x)
        masker.remove(units)
        masked = model(x)
        masker.restore()
        assert torch.allclose(masked, pruned(x), atol=1e-5), group.name
        assert not torch.allclose(masked, original, atol=1e-4), f"removing {group.name} changed nothing"
        assert torch.equal(model(x), original), "restore() must put every weight back exactly"
        checked += 1
    assert checked >= 2


def test_cache_batches_takes_exactly_the_first_samples():
    data = [(torch.full((10, 1), float(i)), torch.arange(10) + 10 * i) for i in range(5)]
    batches = cache_batches(data, 25, "cpu")
    assert [len(t) for _, t in batches] == [10, 10, 5]
    assert torch.equal(torch.cat([t for _, t in batches]), torch.arange(25))
    with pytest.raises(PruningError, match="empty"):
        cache_batches([], 5, "cpu")


# ----------------------------------------------------------------------------- the table file, reuse, resume


def test_scan_writes_the_documented_format_and_leaves_the_model_alone(setup, tmp_path):
    model, group_set, scores, batches = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "sens.json"
    table = scan_sensitivity(
        model, group_set, scores, batches, fresh_table(model), ratios=RATIOS, path=path, progress=False
    )
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT
    assert {
        "model",
        "fingerprint",
        "criterion",
        "metric",
        "data",
        "samples",
        "base_metric",
        "sizes",
        "groups",
    } <= set(data)
    assert set(data["groups"]) == {g.name for g in group_set.prunable()}
    for name, ratios in data["groups"].items():
        assert set(ratios) == {"0.25", "0.5", "0.75"}
        for entry in ratios.values():
            expected = (data["base_metric"] - entry["metric"]) / data["base_metric"]
            assert entry["loss"] == pytest.approx(expected)
        assert data["sizes"][name] == next(g.size for g in group_set.prunable() if g.name == name)
    assert data["base_metric"] == pytest.approx(evaluate_batches(model, batches))
    assert any(e["loss"] > 0 for r in data["groups"].values() for e in r.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert SensitivityTable.load(path) == table


def test_matching_table_is_reused_and_a_foreign_one_refused(setup, tmp_path):
    model, group_set, scores, batches = setup
    path = tmp_path / "sens.json"
    scan_sensitivity(
        model, group_set, scores, batches, fresh_table(model), ratios=RATIOS, path=path, progress=False
    )
    calls = []
    scan_sensitivity(
        model,
        group_set,
        scores,
        batches,
        open_table(path, fresh_table(model)),
        ratios=RATIOS,
        path=path,
        progress=False,
        on_result=lambda *a: calls.append(a),
    )
    assert calls == []
    # one more ratio: only that one is measured, for every group
    scan_sensitivity(
        model,
        group_set,
        scores,
        batches,
        open_table(path, fresh_table(model)),
        ratios=(*RATIOS, 0.9),
        path=path,
        progress=False,
        on_result=lambda *a: calls.append(a),
    )
    assert sorted(c[1] for c in calls) == [0.9] * len(group_set.prunable())
    with pytest.raises(PruningError, match="criterion: 'l1_norm' != 'fpgm'.*delete it"):
        open_table(path, fresh_table(model, criterion="fpgm"))
    with pytest.raises(PruningError, match="fingerprint"):
        open_table(path, fresh_table(model, fingerprint="0" * 16))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PruningError, match="cannot read"):
        open_table(tmp_path / "bad.json", fresh_table(model))


def test_killed_scan_restarts_where_it_stopped_and_evaluates_nothing_twice(setup, tmp_path):
    model, group_set, scores, batches = setup
    path = tmp_path / "sens.json"
    evaluated: list[tuple[str, float]] = []

    def killer(group, ratio, entry):
        evaluated.append((group, ratio))
        if len(evaluated) == 5:  # the kill arrives in the middle of the second group
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan_sensitivity(
            model,
            group_set,
            scores,
            batches,
            open_table(path, fresh_table(model)),
            ratios=RATIOS,
            path=path,
            progress=False,
            on_result=killer,
        )
    first_run = list(evaluated)
    saved = json.loads(path.read_text())["groups"]
    assert sum(len(r) for r in saved.values()) == 5
    restarted: list[tuple[str, float]] = []
    scan_sensitivity(
        model,
        group_set,
        scores,
        batches,
        open_table(path, fresh_table(model)),
        ratios=RATIOS,
        path=path,
        progress=False,
        on_result=lambda g, r, e: restarted.append((g, r)),
    )
    everything = first_run + restarted
    assert len(everything) == len(set(everything)), "a (group, ratio) was evaluated twice"
    assert len(everything) == len(group_set.prunable()) * len(RATIOS)
    finished_first = {g for g, _ in first_run if sum(1 for h, _ in first_run if h == g) == len(RATIOS)}
    assert finished_first and not finished_first & {g for g, _ in restarted}, (
        "a finished group was scanned again"
    )
    uninterrupted = scan_sensitivity(
        model, group_set, scores, batches, fresh_table(model), ratios=RATIOS, progress=False
    )
    assert SensitivityTable.load(path).groups == uninterrupted.groups


def test_shards_merge_into_the_full_scan(setup, tmp_path):
    model, group_set, scores, batches = setup
    parts = []
    for k in (1, 2):
        names = shard_groups(group_set, (k, 2))
        part = scan_sensitivity(
            model,
            group_set,
            scores,
            batches,
            fresh_table(model),
            ratios=RATIOS,
            groups=names,
            path=tmp_path / f"part{k}.json",
            progress=False,
        )
        assert set(part.groups) == set(names)
        parts.append(SensitivityTable.load(tmp_path / f"part{k}.json"))
    full = scan_sensitivity(
        model, group_set, scores, batches, fresh_table(model), ratios=RATIOS, progress=False
    )
    merged = merge_tables(parts)
    assert merged.groups == full.groups and merged.base_metric == full.base_metric
    with pytest.raises(PruningError, match="different scans"):
        merge_tables([parts[0], fresh_table(model, samples=10)])
    with pytest.raises(PruningError, match="shard"):
        shard_groups(group_set, (3, 2))


def test_ratios_from_delta():
    assert ratios_from_delta(0.1) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert ratios_from_delta(0.2) == [0.2, 0.4, 0.6, 0.8]
    assert ratios_from_delta(0.3) == [0.3, 0.6, 0.9]


# ----------------------------------------------------------------------------- from a table to ratios


def synthetic_table(group_set, slopes: dict[str, float]) -> SensitivityTable:
    table = SensitivityTable("chain", "f", "l1_norm", "top1_acc", "d", 1, base_metric=100.0)
    for group in group_set.prunable():
        for ratio in (0.1, 0.3, 0.5, 0.7, 0.9):
            table.record(group.name, ratio, 100.0 - 100.0 * slopes[group.name] * ratio**2)
        table.sizes[group.name] = group.size
    return table


@pytest.mark.parametrize("allocation", ["marginal", "level"])
@pytest.mark.parametrize("target", [0.3, 0.5])
def test_sensitive_plan_reaches_the_target_and_spares_sensitive_groups(target, allocation):
    model = chain_net(widths=(32, 64, 64, 64))
    group_set = analyze(model, torch.zeros(1, 3, 8, 8))
    names = [g.name for g in group_set.prunable()]
    slopes = dict(zip(names, (0.05, 2.0, 0.05, 0.05), strict=True))  # the second conv is very sensitive
    table = synthetic_table(group_set, slopes)
    scores = group_scores(group_set, model, "l1_norm")
    chosen = plan_from_sensitivities(table, group_set, scores, target, round_to=8, allocation=allocation)
    assert abs(chosen.plan.reduction - target) <= 0.015
    others = [chosen.ratios[n] for n in names if n != names[1]]
    assert chosen.ratios[names[1]] <= min(others) and chosen.ratios[names[1]] < max(others)
    if allocation == "level":  # equal loss: equally insensitive groups lose about the same share
        assert chosen.ratios[names[1]] < chosen.ratios[names[0]]
    assert all(chosen.plan.keep[g] % 8 == 0 for g in chosen.plan.keep)
    assert all(r <= 0.9 + 1e-9 for r in chosen.ratios.values())
    curves = Curves(table, group_set, {g.index: g.size for g in group_set.prunable()})
    assert curves.ratio_at(group_set.prunable()[0].index, 0.0) == 0.0
    with pytest.raises(PruningError, match="unreachable"):
        plan_from_sensitivities(synthetic_table_subset(table, names[:1]), group_set, scores, 0.9, round_to=8)


@pytest.mark.parametrize("allocation", ["marginal", "level"])
def test_groups_with_flat_curves_are_pruned_evenly(allocation):
    """All losses zero (an easy task): no group is emptied first; the ratios come out like uniform pruning."""
    model = chain_net(widths=(32, 64, 64, 64))
    group_set = analyze(model, torch.zeros(1, 3, 8, 8))
    table = synthetic_table(group_set, {g.name: 0.0 for g in group_set.prunable()})
    scores = group_scores(group_set, model, "l1_norm")
    chosen = plan_from_sensitivities(table, group_set, scores, 0.5, round_to=8, allocation=allocation)
    assert abs(chosen.plan.reduction - 0.5) <= 0.015
    assert max(chosen.ratios.values()) - min(chosen.ratios.values()) <= 0.25


def synthetic_table_subset(table: SensitivityTable, keep: list[str]) -> SensitivityTable:
    subset = SensitivityTable(**{**table.__dict__, "groups": {n: table.groups[n] for n in keep}})
    return subset


# ----------------------------------------------------------------------------- the command and the plot


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


def test_recalibrated_scan_measures_the_pruned_and_re_estimated_model(setup, tmp_path):
    """With ``after_mask`` (BN re-estimation) each try equals: prune physically, re-estimate, evaluate."""
    from torchslim.recovery.batch_norm import recalibrate_batch_norm

    model, group_set, scores, batches = setup
    calibration = [
        (torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(9 + i)), None) for i in range(3)
    ]

    def recalibrate(net):
        recalibrate_batch_norm(net, [images for images, _ in calibration], num_batches=3)

    table = fresh_table(model, recalibrated=True)
    buffers = [b.clone() for b in model.buffers()]
    measured = {}
    scan_sensitivity(
        model,
        group_set,
        scores,
        batches,
        table,
        ratios=(0.5,),
        progress=False,
        after_mask=recalibrate,
        on_result=lambda g, r, e: measured.setdefault(g, e["metric"]),
    )
    base = copy.deepcopy(model)
    recalibrate(base)
    assert table.base_metric == pytest.approx(evaluate_batches(base, batches))
    for group in group_set.prunable():
        count = int(round(group.size * 0.5))
        removed = np.argsort(scores[group.index], kind="stable")[:count]
        pruned = apply_plan(copy.deepcopy(model), group_set, removed_mask(group_set, {group.index: removed}))
        recalibrate(pruned)
        assert measured[group.name] == pytest.approx(evaluate_batches(pruned, batches)), group.name
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True)), (
        "only the copy is touched"
    )
    table.save(tmp_path / "recalibrated.json")
    with pytest.raises(PruningError, match="recalibrated: True != False"):
        open_table(tmp_path / "recalibrated.json", fresh_table(model))
