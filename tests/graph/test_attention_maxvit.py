"""MaxViT (torchvision): whole heads of its relative-positional attention, with their columns of the
position-bias table, and the width of each block's stream through the window and grid partitions
(SwapAxes), as channel groups; the oracle, MACs, saving, ONNX Runtime."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention, SwapAxes

from tests.helpers import TINY_MAXVIT
from tests.helpers.models import Head, calibrate, conv_bn
from tests.helpers.oracle import assert_oracle, outputs
from tests.helpers.tiny_models import tiny_maxvit
from torchslim.export import export_onnx
from torchslim.graph import apply_plan, compare_outputs, oracle_reference, removed_mask
from torchslim.models import load_model, save_model
from torchslim.nn.attention import PrunedRelativePositionalMultiHeadAttention
from torchslim.pruning.counting import profile_model
from torchslim.pruning.prune import analyze, prune

SIZE = 32
WINDOW = "blocks.1.layers.0.layers.window_attention.attn_layer.1"
OUTPUT = "model output (the classifier's outputs are never pruned)"


def _model_and_input() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = calibrate(tiny_maxvit(), (4, 3, SIZE, SIZE))
    return model, torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def _group(group_set, source: str):
    return next(g for g in group_set.groups if g.sources == [source])


def test_heads_and_block_widths_are_groups_and_only_the_output_is_kept():
    model, x = _model_and_input()
    group_set = analyze(model, x)
    kinds = [g.kind for g in group_set.prunable()]
    assert (kinds.count("heads"), kinds.count("embedding")) == (4, 2)  # window + grid attention per block
    heads = _group(group_set, f"{WINDOW}.to_qkv")
    assert heads.kind == "heads" and heads.size == 4 and f"{WINDOW}.merge" in heads.members["consumer"]
    stream = next(g for g in group_set.prunable() if "blocks.1.layers.0.layers.MBconv.proj.1" in g.sources)
    assert stream.kind == "embedding" and f"{WINDOW}.merge" in stream.sources  # through both partitions
    assert [g.reason for g in group_set.skipped()] == [OUTPUT]
    assert profile_model(model, SIZE).macs == sum(u.base_macs for u in group_set.graph.uses if u.inference)


def test_cut_heads_take_their_bias_columns_and_a_wrong_column_fails_the_oracle():
    model, x = _model_and_input()
    group_set = analyze(model, x)
    mask = removed_mask(group_set, {_group(group_set, f"{WINDOW}.to_qkv").index: [0, 2]})
    reference = oracle_reference(model, group_set, mask)
    pruned = apply_plan(copy.deepcopy(model), group_set, mask)
    attention = pruned.get_submodule(WINDOW)
    original = model.get_submodule(WINDOW)
    assert isinstance(attention, PrunedRelativePositionalMultiHeadAttention)
    assert (attention.n_heads, attention.head_dim, attention.scale_factor) == (2, 8, original.scale_factor)
    assert attention.to_qkv.out_features == 48 and attention.merge.in_features == 16
    table = original.relative_position_bias_table.detach()
    assert torch.equal(attention.relative_position_bias_table, table[:, [1, 3]])
    difference, same = compare_outputs(reference, pruned, x)
    assert same, difference
    assert float((outputs(reference, x) - outputs(model, x)).abs().max()) > 1e-2  # the heads mattered
    wrong = copy.deepcopy(pruned)  # the kept heads read the removed heads' columns of the table
    wrong.get_submodule(WINDOW).relative_position_bias_table.data = table[:, [0, 2]].clone()
    difference, same = compare_outputs(reference, wrong, x)
    assert not same and difference > 1e-3


def test_the_pruned_forward_is_torchvisions_when_nothing_is_cut():
    model, _ = _model_and_input()
    for module in model.modules():
        if isinstance(module, RelativePositionalMultiHeadAttention):
            copied = copy.deepcopy(module)
            copied.__class__ = PrunedRelativePositionalMultiHeadAttention
            tokens = torch.randn(2, 3, module.max_seq_len, module.to_qkv.in_features)
            assert torch.allclose(module.eval()(tokens), copied.eval()(tokens), atol=1e-5)


def test_maxvit_prunes_heads_and_widths_to_the_target_saves_rebuilds_and_exports(tmp_path):
    model, x = _model_and_input()
    result = prune(model, x, target_flops=0.5, round_to=4, verify=True)
    assert result.report.verified and abs(result.report.flops_reduction - 0.5) <= 0.01
    assert result.report.macs_after == profile_model(result.model, SIZE).macs
    assert {"heads", "embedding", "mlp hidden"} <= {kind for kind, _, _ in result.report.cut.values()}
    assert assert_oracle(model, result, x) > 1e-3
    cut = [m for m in result.model.modules() if isinstance(m, PrunedRelativePositionalMultiHeadAttention)]
    assert cut and all(m.relative_position_bias_table.shape[1] == m.n_heads for m in cut)
    save_model(tmp_path / "maxvit", result.model, TINY_MAXVIT, {}, input_size=SIZE)
    loaded, _ = load_model(tmp_path / "maxvit", trusted=TINY_MAXVIT)
    heads = [m.n_heads for m in loaded.modules() if isinstance(m, RelativePositionalMultiHeadAttention)]
    assert heads == [m.n_heads for m in result.model.modules() if isinstance(m, type(cut[0]))]
    assert torch.allclose(outputs(loaded, x), outputs(result.model, x), atol=1e-6)
    report = export_onnx(loaded, x[:1], tmp_path / "maxvit.onnx")  # verified against ONNX Runtime
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4


class _Swapped(nn.Module):
    """A conv's channels swapped to the last axis by SwapAxes and read by a linear layer (axes 1 and 3),
    or the batch axis swapped with the channels (0 and 1); swapped back before the head."""

    def __init__(self, axes: tuple[int, int]) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.swap = SwapAxes(*axes)
        self.mlp = nn.Linear(16, 16) if axes == (1, 3) else nn.Identity()
        self.head = Head(16)

    def forward(self, x):
        return self.head(self.swap(self.mlp(self.swap(self.stem(x)))))


def test_swapaxes_moves_channels_with_their_axis_and_a_batch_swap_is_blocked_and_named():
    torch.manual_seed(0)
    model, x = calibrate(_Swapped((1, 3)), (4, 3, 8, 8)), torch.randn(2, 3, 8, 8)
    result = prune(model, x, target_flops=0.3, round_to=1, verify=True)
    assert result.report.verified and result.model.stem[0].out_channels == result.model.mlp.in_features < 16
    assert_oracle(model, result, x)
    stem = _group(analyze(_Swapped((0, 1)).eval(), x), "stem.0")
    assert not stem.prunable and stem.reason.startswith("permutation of the batch axis at node swapaxes")


def test_maxvit_macs_count_the_attention_products():
    """Besides its two linear layers, an attention layer costs q.kT and weights.v of every head:
    partitions x tokens^2 x head_dim each."""
    model, _ = _model_and_input()
    attention = model.get_submodule(WINDOW)
    costs = {layer.name: layer for layer in profile_model(model, SIZE).layers}
    partitions, tokens, width = 4, attention.max_seq_len, attention.to_qkv.in_features  # 4 x 4 map, 2 x 2
    assert costs[WINDOW].kind == "attention" and costs[WINDOW].macs == 2 * partitions * tokens**2 * width
    assert costs[f"{WINDOW}.to_qkv"].macs == partitions * tokens * width * 3 * width
