"""``torchslim.prune`` on real models (oracle, MACs, rounding, training, ONNX) and its selection and errors.

The oracle: ``torchslim.graph.oracle_reference(original, group_set, mask)`` is the unpruned
model with every consumer's input weights zeroed at the removed channels; the pruned model
must compute the same function. Every test that prunes checks it on its own (not only the
pruner's ``verify``), and checks that pruning changed the function, so the check is not vacuous.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.oracle import (
    NUM_CLASSES,
    QUICK_ONNX,
    ROUND_TO,
    assert_oracle,
    calibrate,
    cases,
    convs,
    group_of,
    linears,
    outputs,
    pruned_case,
)
from torchslim.errors import PruningError
from torchslim.export import export_onnx
from torchslim.models import build_model, seed_param_names
from torchslim.pruning.counting import profile_model
from torchslim.pruning.prune import prune

# --------------------------------------------------------------------------- real models


@pytest.mark.parametrize("name", cases())
def test_oracle_holds(name):
    original, result, x, _ = pruned_case(name)
    changed = assert_oracle(original, result, x)
    assert changed > 1e-3, "pruning half the MACs should change the function"
    assert result.model is not original


@pytest.mark.parametrize("name", cases())
def test_reduction_rounding_and_classifier(name):
    original, result, _, size = pruned_case(name)
    report = result.report
    assert abs(report.flops_reduction - 0.5) <= 0.01
    # The report's MAC counts (from shapes) agree with a forward-pass count of the real modules.
    assert report.macs_before == profile_model(original, size).macs
    assert report.macs_after == profile_model(result.model, size).macs
    assert report.params_after == sum(p.numel() for p in result.model.parameters()) < report.params_before
    assert report.groups_pruned > 0
    before, after = convs(original), convs(result.model)
    changed = 0
    for layer, conv in after.items():
        old = before[layer]
        if conv.out_channels != old.out_channels:
            changed += 1
            assert conv.out_channels % ROUND_TO == 0, f"{layer}: {old.out_channels} -> {conv.out_channels}"
            assert 0 < conv.out_channels < old.out_channels
        assert conv.weight.shape[0] == conv.out_channels
        assert conv.weight.shape[1] == conv.in_channels // conv.groups
    assert changed > 0
    old_linears = linears(original)
    for layer, linear in linears(result.model).items():
        if linear.out_features != old_linears[layer].out_features:
            assert linear.out_features % ROUND_TO == 0, layer
        assert linear.weight.shape == (linear.out_features, linear.in_features)
    assert report.channels  # layer -> [before, after] for every resized layer
    for old, new in report.channels.values():
        assert new < old
    # The final classifier keeps its classes, and is reported as kept for that reason.
    head_name, head = list(linears(result.model).items())[-1]
    assert head.out_features == NUM_CLASSES
    assert "never pruned" in group_of(result, head_name).reason
    assert outputs(result.model, torch.randn(1, 3, size, size)).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize("name", cases())
def test_pruned_model_trains_one_step(name):
    _, result, _, _ = pruned_case(name)
    x = torch.randn(2, 3, 32, 32)
    model = copy.deepcopy(result.model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    logits = model(x)
    logits = logits[0] if isinstance(logits, tuple) else logits
    loss = F.cross_entropy(logits, torch.tensor([1, 7]))
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) > len(before) // 2
    first_conv = next(iter(convs(model)))
    assert f"{first_conv}.weight" in moved
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", cases(QUICK_ONNX))
def test_pruned_model_exports_to_onnx(name, tmp_path):
    _, result, x, _ = pruned_case(name)
    path = tmp_path / "pruned.onnx"
    report = export_onnx(result.model, x, path, verify=True)
    assert path.is_file() and report.path == path
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-3
    assert report.size_bytes == path.stat().st_size


def test_mobilenet_v2_depthwise_convs_stay_depthwise():
    original, result, _, _ = pruned_case("mobilenet_v2")
    before = convs(original)
    depthwise = {n: c for n, c in convs(result.model).items() if c.groups > 1}
    assert len(depthwise) == 17
    pruned_any = False
    for layer, conv in depthwise.items():
        assert conv.groups == conv.in_channels == conv.out_channels, layer
        assert conv.weight.shape == (conv.out_channels, 1, 3, 3)
        pruned_any |= conv.out_channels < before[layer].out_channels
    assert pruned_any
    # Every depthwise conv follows the expand conv of its block, whose width it shares.
    for block in range(2, 18):
        expand = result.model.features[block].conv[0][0]
        dw = result.model.features[block].conv[1][0]
        assert expand.out_channels == dw.in_channels
        assert result.model.features[block].conv[1][1].num_features == dw.out_channels


def test_verify_flag_and_inplace():
    model = small_v1()
    x = torch.randn(2, 3, 32, 32)
    result = prune(model, x, target_flops=0.5, verify=True, inplace=True)
    assert result.report.verified is True
    assert result.report.max_abs_diff is not None and result.report.max_abs_diff < 1e-4
    assert result.model is model and model.fc.in_features < 512
    assert result.report.macs_after == result.plan.macs_after == profile_model(model, 32).macs
    # Without verify there is no verdict; without inplace the original is untouched.
    _, unverified, _, _ = pruned_case("mobilenet_v1")
    assert unverified.report.verified is None and unverified.report.max_abs_diff is None
    original = pruned_case("mobilenet_v1")[0]
    assert original.fc.in_features == 1024 and unverified.model.fc.in_features < 1024


# --------------------------------------------------------------------------- selection and errors


def small_v1() -> nn.Module:
    torch.manual_seed(0)
    return calibrate(build_model("mobilenet_v1", num_classes=NUM_CLASSES, width_mult=0.5), (4, 3, 32, 32))


def test_pruned_params_matching_nothing_lists_names():
    model = small_v1()
    aliases = seed_param_names("mobilenet_v1", model)
    with pytest.raises(PruningError) as info:
        prune(model, torch.randn(1, 3, 32, 32), target_flops=0.5, pruned_params="nothing_.*", aliases=aliases)
    message = str(info.value)
    assert "'nothing_.*' matches no parameter" in message
    assert "features.0.conv.weight (conv1_weights)" in message
    with pytest.raises(PruningError, match="not a valid regex"):
        prune(model, torch.randn(1, 3, 32, 32), target_flops=0.5, pruned_params="([")


def test_pruned_params_by_seed_name_selects_only_those_layers():
    model = small_v1()
    aliases = seed_param_names("mobilenet_v1", model)
    x = torch.randn(2, 3, 32, 32)
    result = prune(model, x, target_flops=0.3, pruned_params=".*_sep_weights", aliases=aliases)
    assert abs(result.report.flops_reduction - 0.3) <= 0.01
    assert result.model.features[0].conv.out_channels == 16  # the stem is not selected
    resized = {name for name in result.report.channels}
    assert resized and all(".pointwise.conv" in n or ".depthwise.conv" in n for n in resized)
    for group in result.group_set.prunable():
        assert group.matched and all(m.endswith("pointwise.conv.weight") for m in group.matched)
    assert_oracle(model, result, x)


def test_classifier_never_pruned_even_when_selected():
    model = small_v1()
    result = prune(model, torch.randn(2, 3, 32, 32), target_flops=0.5, pruned_params=".*")
    assert result.model.fc.out_features == NUM_CLASSES
    fc = group_of(result, "fc")
    assert not fc.prunable and "model output" in fc.reason
    assert "fc" in result.report.skipped


def test_unreachable_target_is_a_pruning_error():
    model = small_v1()
    with pytest.raises(PruningError, match="unreachable"):
        prune(
            model,
            torch.randn(1, 3, 32, 32),
            target_flops=0.99,
            pruned_params=r"features\.1\.pointwise\.conv\.weight",
        )
    for bad in (0.0, 1.5):
        with pytest.raises(PruningError, match=r"must be in \(0, 1\)"):
            prune(model, torch.randn(1, 3, 32, 32), target_flops=bad)


def test_only_unprunable_groups_is_a_pruning_error():
    model = small_v1()
    with pytest.raises(PruningError, match="no prunable group"):
        prune(model, torch.randn(1, 3, 32, 32), target_flops=0.5, pruned_params=r"fc\.weight")


def test_global_ranking_reaches_the_target():
    model = small_v1()
    x = torch.randn(2, 3, 32, 32)
    uniform = prune(model, x, target_flops=0.5)
    result = prune(model, x, target_flops=0.5, global_ranking=True)
    assert abs(result.report.flops_reduction - 0.5) <= 0.01
    assert result.report.macs_after == profile_model(result.model, 32).macs
    assert_oracle(model, result, x)
    before = convs(model)
    for layer, conv in convs(result.model).items():
        assert conv.out_channels == before[layer].out_channels or conv.out_channels % ROUND_TO == 0
    # Global ranking distributes the cut differently from one ratio for all.
    assert result.plan.keep != uniform.plan.keep
