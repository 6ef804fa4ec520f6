"""Transformers: whole attention heads (nn.MultiheadAttention, timm, Swin) and embedding width as
channel groups; the oracle, MACs, planning, saving.

A head is one unit: its q, k and v rows of ``in_proj_weight`` and its columns of ``out_proj``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

from tests.helpers import TINY_SWIN, TINY_SWIN_V2, TINY_TIMM_VIT, TINY_VIT
from tests.helpers.oracle import assert_oracle, outputs
from tests.helpers.shape_reads import LookalikeAttentionNet
from tests.helpers.tiny_models import tiny_swin, tiny_vit
from torchslim.errors import PruningError
from torchslim.export import export_onnx
from torchslim.graph import apply_plan, oracle_reference, removed_mask
from torchslim.models import build_model, load_model, save_model
from torchslim.nn.attention import (
    PrunedMultiheadAttention,
    PrunedShiftedWindowAttention,
    PrunedShiftedWindowAttentionV2,
)
from torchslim.pruning.counting import profile_model
from torchslim.pruning.prune import analyze, prune

SIZE = 32


def _vit_input(seed: int = 3) -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _head_groups(group_set):
    return [g for g in group_set.prunable() if g.name.endswith("self_attention")]


def test_heads_are_groups_of_whole_heads():
    torch.manual_seed(0)
    group_set = analyze(tiny_vit(), _vit_input())
    heads = _head_groups(group_set)
    assert [g.size for g in heads] == [4, 4]
    assert heads[0].members["consumer"] == ["encoder.layers.encoder_layer_0.self_attention.out_proj"]


def test_pruning_heads_keeps_head_dim_and_matches_the_oracle():
    torch.manual_seed(0)
    model, x = tiny_vit().eval(), _vit_input()
    group_set = analyze(model, x)
    heads = _head_groups(group_set)[0]
    mask = removed_mask(group_set, {heads.index: [1, 3]})
    reference = oracle_reference(model, group_set, mask)
    pruned = apply_plan(copy.deepcopy(model), group_set, mask)
    attention = pruned.encoder.layers[0].self_attention
    assert isinstance(attention, PrunedMultiheadAttention)
    assert (attention.num_heads, attention.head_dim, attention.embed_dim) == (2, 8, 32)
    assert attention.in_proj_weight.shape == (48, 32) and attention.out_proj.weight.shape == (32, 16)
    expected, actual = outputs(reference, x), outputs(pruned, x)
    assert float((expected - actual).abs().max()) <= 1e-4 * float(expected.abs().max())
    assert float((expected - outputs(model, x)).abs().max()) > 1e-3  # the heads mattered


def test_the_oracle_catches_a_wrong_head_cut():
    """Removing heads 1 and 3 physically but comparing with heads 0 and 2 removed must fail."""
    torch.manual_seed(0)
    model, x = tiny_vit().eval(), _vit_input()
    group_set = analyze(model, x)
    heads = _head_groups(group_set)[0]
    pruned = apply_plan(copy.deepcopy(model), group_set, removed_mask(group_set, {heads.index: [1, 3]}))
    wrong = oracle_reference(model, group_set, removed_mask(group_set, {heads.index: [0, 2]}))
    expected, actual = outputs(wrong, x), outputs(pruned, x)
    assert float((expected - actual).abs().max()) > 1e-2 * float(expected.abs().max())


def test_prune_counts_attention_macs_and_verifies():
    torch.manual_seed(0)
    model, x = tiny_vit().eval(), _vit_input()
    result = prune(model, x, target_flops=0.3, round_to=1, verify=True)
    assert result.report.verified
    assert abs(result.report.flops_reduction - 0.3) <= 0.01
    assert result.report.macs_before == profile_model(model, SIZE).macs
    assert result.report.macs_after == profile_model(result.model, SIZE).macs
    assert_oracle(model, result, x)


def test_a_head_pruned_vit_saves_rebuilds_and_exports(tmp_path):
    torch.manual_seed(0)
    model, x = build_model(TINY_VIT).eval(), _vit_input()
    group_set = analyze(model, x)
    removed = {g.index: [0] for g in _head_groups(group_set)}
    pruned = apply_plan(copy.deepcopy(model), group_set, removed_mask(group_set, removed))
    save_model(tmp_path / "vit", pruned, TINY_VIT, {}, input_size=SIZE)
    loaded, manifest = load_model(tmp_path / "vit", trusted=TINY_VIT)
    attention = loaded.encoder.layers[1].self_attention
    assert isinstance(attention, PrunedMultiheadAttention) and attention.num_heads == 3
    assert torch.allclose(outputs(loaded, x), outputs(pruned, x), atol=1e-6)
    report = export_onnx(loaded, x[:1], tmp_path / "vit.onnx")  # verified against ONNX Runtime
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4


class _NotBatchFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.attention = nn.MultiheadAttention(16, 2)  # sequence-first: the tracer reads axis 0 as batch
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).permute(2, 0, 1)
        out, _ = self.attention(tokens, tokens, tokens)
        return self.head(out.mean(0))


class _OwnAttention(nn.Module):
    """An attention block written with matmuls the tracer does not follow."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj((q @ k.transpose(-2, -1)).softmax(-1) @ v)


class _WithOwnAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.block = _OwnAttention()
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.block(self.embed(x).flatten(2).transpose(1, 2)).mean(1))


@pytest.mark.parametrize(
    ("model", "named"),
    [
        (_NotBatchFirst, "attention layer attention (MultiheadAttention: batch_first=False)"),
        (_WithOwnAttention, "in block (_OwnAttention)"),
    ],
)
def test_attention_it_does_not_understand_is_blocked_and_named(model, named):
    group_set = analyze(model(), torch.randn(1, 3, 16, 16))
    reasons = [g.reason for g in group_set.skipped()]
    assert any(named in reason for reason in reasons), reasons
    macs = profile_model(model(), 16).macs
    assert macs == sum(u.base_macs for u in group_set.graph.uses if u.inference)


def _embedding(group_set):
    return next(g for g in group_set.prunable() if g.kind == "embedding")


def test_embedding_width_is_one_group_with_its_tensors_and_norms():
    torch.manual_seed(0)
    group_set = analyze(tiny_vit(), _vit_input())
    embedding = _embedding(group_set)
    assert embedding.size == 32
    assert embedding.sources[0] == "conv_proj" and "encoder.layers.encoder_layer_1.mlp.3" in embedding.sources
    assert "encoder.ln" in embedding.members["norm"]
    assert {t.target for t in group_set.graph.tensor_slices} == {"class_token", "encoder.pos_embedding"}
    assert [(w.module, w.attribute) for w in group_set.graph.widths] == [("", "hidden_dim")]
    kinds = sorted(g.kind for g in group_set.prunable())
    assert kinds == ["embedding", "heads", "heads", "mlp hidden", "mlp hidden"]


def test_pruning_the_embedding_slices_tokens_norms_and_width(tmp_path):
    torch.manual_seed(0)
    model, x = build_model(TINY_VIT).eval(), _vit_input()
    group_set = analyze(model, x)
    mask = removed_mask(group_set, {_embedding(group_set).index: [0, 5, 9, 31]})
    reference = oracle_reference(model, group_set, mask)
    pruned = apply_plan(copy.deepcopy(model), group_set, mask)
    assert pruned.hidden_dim == 28 and pruned.class_token.shape == (1, 1, 28)
    assert pruned.encoder.pos_embedding.shape == (1, 17, 28)
    assert pruned.encoder.ln.normalized_shape == (28,)
    attention = pruned.encoder.layers[0].self_attention
    assert (attention.embed_dim, attention.num_heads, attention.in_proj_weight.shape) == (28, 4, (96, 28))
    expected, actual = outputs(reference, x), outputs(pruned, x)
    assert float((expected - actual).abs().max()) <= 1e-4 * float(expected.abs().max())
    assert float((expected - outputs(model, x)).abs().max()) > 1e-3
    save_model(tmp_path / "vit", pruned, TINY_VIT, {}, input_size=SIZE)
    loaded, _ = load_model(tmp_path / "vit", trusted=TINY_VIT)
    assert loaded.hidden_dim == 28
    assert torch.allclose(outputs(loaded, x), actual, atol=1e-6)


def test_prune_cuts_heads_mlp_and_embedding_and_reports_kinds():
    torch.manual_seed(0)
    model, x = tiny_vit().eval(), _vit_input()
    result = prune(model, x, target_flops=0.4, round_to=1, verify=True, global_ranking=True)
    assert result.report.verified
    assert abs(result.report.flops_reduction - 0.4) <= 0.01
    assert result.report.macs_after == profile_model(result.model, SIZE).macs
    assert {kind for kind, _, _ in result.report.cut.values()} >= {"embedding", "mlp hidden"}
    assert_oracle(model, result, x)


def test_timm_attention_heads_and_embedding_prune_save_and_rebuild(tmp_path):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model, x = build_model(TINY_TIMM_VIT).eval(), _vit_input()
    result = prune(model, x, target_flops=0.5, round_to=4, verify=True)
    assert result.report.verified and abs(result.report.flops_reduction - 0.5) <= 0.01
    assert {kind for kind, _, _ in result.report.cut.values()} == {"heads", "mlp hidden", "embedding"}
    assert result.report.macs_after == profile_model(result.model, SIZE).macs
    assert_oracle(model, result, x)
    attention = result.model.blocks[0].attn
    assert attention.attn_dim == attention.num_heads * attention.head_dim == attention.proj.in_features
    assert attention.head_dim == 8
    save_model(tmp_path / "timm", result.model, TINY_TIMM_VIT, {}, input_size=SIZE)
    loaded, _ = load_model(tmp_path / "timm", trusted=TINY_TIMM_VIT)
    assert loaded.blocks[0].attn.num_heads == attention.num_heads
    assert torch.allclose(outputs(loaded, x), outputs(result.model, x), atol=1e-6)


def test_a_models_own_class_named_attention_is_kept_whole_not_taken_for_timms():
    model = LookalikeAttentionNet().eval()
    result = prune(model, torch.randn(2, 3, 16, 16), target_flops=0.2, round_to=1, verify=True)
    assert result.report.verified
    embedding = next(g for g in result.group_set.groups if "patch" in g.sources)
    assert not embedding.prunable and "not timm's standard attention layer" in embedding.reason
    assert result.model.mlp[0].out_features < 64


def test_per_mac_ranking_reaches_the_target_across_kinds():
    torch.manual_seed(0)
    model, x = tiny_vit().eval(), _vit_input()
    result = prune(model, x, target_flops=0.5, round_to=4, verify=True, global_ranking="per_mac")
    assert result.report.verified and abs(result.report.flops_reduction - 0.5) <= 0.01
    assert {"heads", "embedding"} <= {kind for kind, _, _ in result.report.cut.values()}


def test_heads_go_one_by_one_whatever_round_to():
    torch.manual_seed(0)
    model, x = tiny_vit().eval(), _vit_input()
    result = prune(model, x, target_flops=0.5, round_to=8, verify=True)
    heads = [kept for kind, _, kept in result.report.cut.values() if kind == "heads"]
    assert heads and all(0 < kept < 4 for kept in heads)


def test_an_unreachable_target_names_the_groups():
    torch.manual_seed(0)
    with pytest.raises(PruningError, match=r"encoder_layer_0.self_attention \(heads\) keeps 1 of 4"):
        prune(tiny_vit().eval(), _vit_input(), target_flops=0.99, round_to=8)


def test_swin_window_attention_heads_tables_and_stages(tmp_path):
    torch.manual_seed(0)
    model, x = build_model(TINY_SWIN).eval(), _vit_input()
    group_set = analyze(model, x)
    assert sorted(g.kind for g in group_set.prunable()).count("heads") == 4
    assert sorted(g.kind for g in group_set.prunable()).count("embedding") == 2  # one per stage
    heads = _head_groups_of(group_set, "features.3.0.attn.qkv")
    mask = removed_mask(group_set, {heads.index: [1, 2]})
    reference = oracle_reference(model, group_set, mask)
    pruned = apply_plan(copy.deepcopy(model), group_set, mask)
    attention = pruned.features[3][0].attn
    assert isinstance(attention, PrunedShiftedWindowAttention) and attention.num_heads == 2
    assert attention.relative_position_bias_table.shape[1] == 2 and attention.head_dim == 8
    expected, actual = outputs(reference, x), outputs(pruned, x)
    assert float((expected - actual).abs().max()) <= 1e-4 * float(expected.abs().max())
    assert float((expected - outputs(model, x)).abs().max()) > 1e-3
    result = prune(model, x, target_flops=0.5, round_to=4, verify=True)
    assert result.report.verified and abs(result.report.flops_reduction - 0.5) <= 0.01
    assert result.report.macs_after == profile_model(result.model, SIZE).macs
    assert_oracle(model, result, x)
    save_model(tmp_path / "swin", result.model, TINY_SWIN, {}, input_size=SIZE)
    loaded, _ = load_model(tmp_path / "swin", trusted=TINY_SWIN)
    assert torch.allclose(outputs(loaded, x), outputs(result.model, x), atol=1e-6)


def test_swin_pruned_forward_is_torchvisions_when_nothing_is_cut():
    torch.manual_seed(0)
    for module in tiny_swin().modules():
        if isinstance(module, ShiftedWindowAttention):
            nn.init.normal_(module.relative_position_bias_table)
            copied = copy.deepcopy(module)
            copied.__class__ = PrunedShiftedWindowAttention
            tokens = torch.randn(2, 7, 5, module.qkv.in_features)  # padded to windows, shifted
            assert torch.allclose(module.eval()(tokens), copied.eval()(tokens), atol=1e-6)


def _head_groups_of(group_set, source):
    return next(g for g in group_set.prunable() if g.sources == [source])


def test_swin_v2_heads_take_their_logit_scale_and_bias_mlp_rows(tmp_path):
    torch.manual_seed(0)
    model, x = build_model(TINY_SWIN_V2).eval(), _vit_input()
    result = prune(model, x, target_flops=0.5, round_to=4, verify=True)
    assert result.report.verified and abs(result.report.flops_reduction - 0.5) <= 0.01
    assert result.report.macs_after == profile_model(result.model, SIZE).macs
    assert_oracle(model, result, x)
    cut = [m for m in result.model.modules() if isinstance(m, PrunedShiftedWindowAttentionV2)]
    assert cut and all(m.logit_scale.shape[0] == m.num_heads == m.cpb_mlp[2].out_features for m in cut)
    save_model(tmp_path / "swin2", result.model, TINY_SWIN_V2, {}, input_size=SIZE)
    loaded, _ = load_model(tmp_path / "swin2", trusted=TINY_SWIN_V2)
    assert torch.allclose(outputs(loaded, x), outputs(result.model, x), atol=1e-6)
