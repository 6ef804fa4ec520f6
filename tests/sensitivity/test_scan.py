"""Sensitivity scans: masking equals pruning, the table file, reuse, a restart after SIGKILL that evaluates
nothing twice, shards and merge, BN re-estimation per try. Tiny models and generated data only."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from tests.helpers.models import calibrated, conv_chain
from tests.helpers.processes import assert_killed, run_python
from tests.helpers.sensitivity import RATIOS, batches_for, fresh_table
from tests.helpers.tiny_models import TinyNet
from torchslim.engine.cached import evaluate_batches
from torchslim.errors import PruningError
from torchslim.graph import apply_plan, removed_mask
from torchslim.pruning.prune import analyze
from torchslim.recovery.batch_norm import recalibrate_batch_norm
from torchslim.sensitivity.scan import GroupMasker, group_scores, scan_sensitivity, shard_groups
from torchslim.sensitivity.table import (
    FORMAT,
    SensitivityTable,
    merge_tables,
    open_table,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup():
    model = calibrated(conv_chain())
    group_set = analyze(model, torch.zeros(1, 3, 8, 8))
    scores = group_scores(group_set, model, "l1_norm")
    return model, group_set, scores, batches_for(model)


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
        masker = GroupMasker(model, group_set, group)
        original = model(x)
        masker.remove(units)
        masked = model(x)
        masker.restore()
        assert torch.allclose(masked, pruned(x), atol=1e-5), group.name
        assert not torch.allclose(masked, original, atol=1e-4), f"removing {group.name} changed nothing"
        assert torch.equal(model(x), original), "restore() must put every weight back exactly"
        checked += 1
    assert checked >= 2


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


# A scan in a process of its own that SIGKILLs itself after its fifth result (in the middle of the
# second group), printing each result first; the model's state and the batches come from files.
KILLED_SCAN = """
import json, os, signal, sys
import torch
from tests.helpers.models import conv_chain
from tests.helpers.sensitivity import RATIOS, fresh_table
from torchslim.pruning.prune import analyze
from torchslim.sensitivity.scan import group_scores, scan_sensitivity
from torchslim.sensitivity.table import open_table

torch.set_num_threads(1)
state, batches, path = sys.argv[1:]
model = conv_chain()
model.load_state_dict(torch.load(state, weights_only=True))
model.eval()
group_set = analyze(model, torch.zeros(1, 3, 8, 8))
results = []


def killer(group, ratio, entry):
    results.append((group, ratio))
    print(json.dumps([group, ratio]), flush=True)
    if len(results) == 5:
        os.kill(os.getpid(), signal.SIGKILL)


scan_sensitivity(
    model,
    group_set,
    group_scores(group_set, model, "l1_norm"),
    torch.load(batches, weights_only=True),
    open_table(path, fresh_table(model)),
    ratios=RATIOS,
    path=path,
    progress=False,
    on_result=killer,
)
"""


def test_killed_scan_restarts_where_it_stopped_and_evaluates_nothing_twice(setup, tmp_path):
    model, group_set, scores, batches = setup
    path = tmp_path / "sens.json"
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(batches, tmp_path / "batches.pt")
    killed = run_python(KILLED_SCAN, str(tmp_path / "model.pt"), str(tmp_path / "batches.pt"), str(path))
    assert_killed(killed)
    evaluated = [tuple(json.loads(line)) for line in killed.stdout.splitlines()]
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


# ----------------------------------------------------------------------------- from a table to ratios


# ----------------------------------------------------------------------------- the command and the plot


def test_recalibrated_scan_measures_the_pruned_and_re_estimated_model(setup, tmp_path):
    """With ``after_mask`` (BN re-estimation) each try equals: prune physically, re-estimate, evaluate."""

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
