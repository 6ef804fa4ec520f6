"""Ints a forward reads from tensor shapes (torchslim.graph.sizes): a reshape axis sized by a channel
width follows those channels, or the width is kept whole and the refusal names the op and module;
slice bounds read from shapes are the numbers they were when traced. Each pattern in a tiny model,
pruned and checked by the oracle (the timm models they come from: CaiT, CoaT, CrossViT, DaViT,
HaloNet)."""

from __future__ import annotations

import torch

from tests.helpers.oracle import group_of, prune_small
from tests.helpers.shape_reads import (
    PadCropNet,
    QuarterRows,
    SliceToWidth,
    TinyCaiT,
    TinyGlu,
    TinyPVT,
    UpsampleToInput,
    WidthScaled,
)
from torchslim.graph.sizes import ShapeRead, SizeOrigins
from torchslim.graph.trace import _propagate_shapes, symbolic_trace
from torchslim.pruning.prune import analyze


def test_heads_sized_from_the_input_width_keep_the_embedding_whole_and_prune_the_rest():
    model = TinyCaiT()
    result, _ = prune_small(model, target=0.2)  # the oracle checks the pruned model
    embedding = group_of(result, "patch")
    assert not embedding.prunable
    assert "reshape at node" in embedding.reason and "takes a size from the width of" in embedding.reason
    assert "in blocks.0.attn (HeadsFromWidth)" in embedding.reason
    pruned = result.model
    assert pruned.patch.out_channels == 16 and pruned.blocks[0].attn.qkv.in_features == 16
    assert pruned.blocks[0].mlp[0].out_features < 96 or pruned.blocks[1].mlp[0].out_features < 96


def test_tokens_reshaped_to_an_image_by_their_own_width_still_prune():
    model = TinyPVT()
    result, _ = prune_small(model, target=0.3)
    embedding = group_of(result, "patch")
    assert embedding.prunable, embedding.reason
    pruned = result.model
    assert pruned.patch.out_channels == pruned.pos.dw.in_channels == pruned.fc.in_features < 16


def test_a_crop_to_the_size_read_before_padding_keeps_channels_prunable():
    model = PadCropNet()
    result, _ = prune_small(model, target=0.3)
    for layer in ("stem.0", "block.conv"):
        assert group_of(result, layer).prunable, group_of(result, layer).reason
    assert result.model.block.conv.out_channels < 16


def test_a_slice_as_wide_as_another_branch_keeps_that_branch_whole():
    group_set = analyze(SliceToWidth().eval(), torch.randn(1, 3, 8, 8))
    narrow = next(g for g in group_set.groups if "narrow" in g.sources)
    assert not narrow.prunable
    assert "getitem at node" in narrow.reason and "takes a size from the width of relu" in narrow.reason


def test_a_width_divided_into_rows_without_a_fixed_axis_to_hold_it_is_kept_whole():
    # view(b, c // 4, -1): the channel shuffle's split (tests/graph/test_groups.py) needs a literal
    # axis of size 4 to keep the width a multiple of 4; here -1 takes the rest
    group_set = analyze(QuarterRows().eval(), torch.randn(1, 3, 8, 8))
    conv = next(g for g in group_set.groups if "conv" in g.sources)
    assert not conv.prunable and "view at node" in conv.reason and "width of relu" in conv.reason


def test_a_spatial_size_passed_whole_reads_no_width():
    result, _ = prune_small(UpsampleToInput(), target=0.3)
    for layer in ("fine", "coarse"):
        assert group_of(result, layer).prunable, group_of(result, layer).reason
    assert result.model.fine.out_channels < 16


def test_the_pieces_of_a_chunk_are_tensors_not_sizes():
    result, _ = prune_small(TinyGlu(), target=0.3)
    hidden = group_of(result, "fc1")
    assert hidden.prunable, hidden.reason
    assert result.model.fc1.out_features == 2 * result.model.fc2.in_features < 64


def test_a_scale_computed_from_a_width_keeps_that_width():
    group_set = analyze(WidthScaled().eval(), torch.randn(1, 3, 8, 8))
    conv = next(g for g in group_set.groups if "conv" in g.sources)
    assert not conv.prunable and "mul at node" in conv.reason and "width of relu" in conv.reason


class Reads(torch.nn.Module):
    def forward(self, x):
        B, N, C = x.shape
        split = x.reshape(x.shape[:2] + (2, -1))
        return x.view(B, N, C // 2, 2) + x.size(-1), split


def test_size_origins_name_the_axes_an_int_is_read_from():
    model = Reads()
    graph_module = symbolic_trace(model)
    _propagate_shapes(model, graph_module, torch.randn(1, 5, 8))
    nodes = {n.name: n for n in graph_module.graph.nodes}
    x, origins = nodes["x"], SizeOrigins()
    view = next(n for n in nodes.values() if n.target == "view")
    sizes = origins.reshape_sizes(view)
    assert [s.direct for s in sizes[:2]] == [True, True] and sizes[3] == 2
    assert sizes[1].reads == {ShapeRead(x, 1)}
    assert sizes[2].reads == {ShapeRead(x, 2)} and not sizes[2].direct  # C // 2: computed
    reshape = next(n for n in nodes.values() if n.target == "reshape")
    whole = origins.reshape_sizes(reshape)  # a slice of the shape plus a tuple
    assert [s.reads if not isinstance(s, int) else s for s in whole] == [
        {ShapeRead(x, 0)},
        {ShapeRead(x, 1)},
        2,
        -1,
    ]
    size = next(n for n in nodes.values() if n.target == "size")
    assert origins.origin(size).reads == {ShapeRead(x, 2)}  # axis -1, normalised
