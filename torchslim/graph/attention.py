"""Attention layers in the channel graph: heads as removable units (nn.MultiheadAttention, timm's
Attention, torchvision Swin's and MaxViT's attention).

Whole heads are pruned (``num_heads`` shrinks, ``head_dim`` stays): a head's q, k and v rows of
``in_proj_weight`` and its columns of ``out_proj`` are one unit. Pruning ``head_dim`` would change
the softmax scale, so it is not offered. The layer's input and output widths (the embedding) are
channels like a linear layer's. An attention layer the tracer does not understand is blocked,
with the layer named as the reason.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import numpy as np
import torch.fx as fx
from torch import nn
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

from torchslim.nn.attention import (
    PrunedRelativePositionalMultiHeadAttention,
    PrunedShiftedWindowAttention,
    PrunedShiftedWindowAttentionV2,
)

from .channel_graph import LayerUse, TensorSlice, WidthAttribute
from .labels import channel_labels
from .nodes import input_width

ChannelTracer = Any  # a torchslim.graph.tracer.ChannelTracer (which imports this module)


def unsupported_reason(attention: nn.MultiheadAttention) -> str | None:
    """Why heads of ``attention`` cannot be pruned, or None."""
    if not attention.batch_first:
        return "batch_first=False"
    if not attention._qkv_same_embed_dim:
        return "separate key/value widths"
    if attention.bias_k is not None or attention.add_zero_attn:
        return "bias_k / add_zero_attn"
    return None


def _inputs(node: fx.Node) -> list:
    names = ("query", "key", "value")
    args = list(node.args[:3]) + [node.kwargs.get(n) for n in names[len(node.args[:3]) :]]
    return args


def trace_multihead(tracer: ChannelTracer, node: fx.Node, name: str, attention: nn.MultiheadAttention):
    """Record the in-projection, the two attention products and the out-projection of one call."""
    reason = unsupported_reason(attention)
    masks = [k for k in ("attn_mask", "key_padding_mask") if node.kwargs.get(k) is not None]
    inputs = _inputs(node)
    shapes = [_shape(arg) for arg in inputs]
    if reason is None and (masks or len(node.args) > 3):
        reason = "masks"
    if reason is None and (None in shapes or len({s for s in shapes}) != 1 or len(shapes[0]) != 3):
        reason = "query, key and value of different shapes"
    if reason is not None:
        reason = f"attention layer {name} ({type(attention).__name__}: {reason})"
        for layer, count in ((name, 3 * attention.embed_dim), (f"{name}.out_proj", attention.embed_dim)):
            tracer.ids.block(tracer.source_ids(layer, count), reason)  # its heads show up as kept, and why
        return tracer.opaque(node, reason)
    _, length, width = shapes[0]
    in_ids = _joined_inputs(tracer, node, inputs, width)
    heads, head_dim = attention.num_heads, attention.head_dim
    inner = tracer.source_ids(name, 3 * heads * head_dim)
    per_head = inner.reshape(3, heads, head_dim)
    for head in range(heads):  # a head's q, k and v channels go together
        tracer.ids.union_arrays(per_head[0, head, :1], per_head[:, head, :].reshape(-1))
    tracer.record(LayerUse(name, "attention", in_ids, inner, length))
    tracer.graph.head_layers.add(name)
    q_and_v = np.concatenate([per_head[0].reshape(-1), per_head[2].reshape(-1)])
    tracer.record(LayerUse(f"{name}:products", "product", q_and_v, None, length * length))
    out_name = f"{name}.out_proj"
    out_ids = tracer.source_ids(out_name, attention.out_proj.out_features)
    tracer.record(LayerUse(out_name, "linear", per_head[2].reshape(-1).copy(), out_ids, length))
    output = channel_labels(out_ids, 3, 2)
    meta = node.meta.get("tensor_meta")
    return [output, None] if isinstance(meta, (list, tuple)) and not hasattr(meta, "shape") else output


def _joined_inputs(tracer: ChannelTracer, node: fx.Node, inputs: list, width: int) -> np.ndarray | None:
    """The input channel ids: query, key and value read the same columns of in_proj_weight."""
    vectors = [tracer.channel_vector(node, tracer.value(arg), 2, width) for arg in inputs]
    present = [v for v in vectors if v is not None]
    if len(present) != len(vectors):
        for vector in present:
            tracer.ids.block(vector, f"attention layer {node.target} reads an input it cannot follow")
        return None
    for other in present[1:]:
        tracer.ids.union_arrays(present[0], other)
    return present[0]


def _given(value) -> bool:
    """Whether a mask argument is set: not None / False, nor a model input left at such a default."""
    if isinstance(value, fx.Node) and value.op == "placeholder":
        return bool(value.args) and value.args[0] not in (None, False)
    return value not in (None, False)


def _shape(arg) -> tuple | None:
    meta = arg.meta.get("tensor_meta") if isinstance(arg, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class HeadUnits(NamedTuple):
    """One attention layer with a fused q/k/v projection read by an output projection, in the graph:
    its three uses (projection in, attention products, projection out), one id per head (its first q
    channel), the value channels and the output channels."""

    uses: list[LayerUse]
    head_ids: np.ndarray
    values: np.ndarray
    out_ids: np.ndarray


def fused_qkv_heads(
    tracer: ChannelTracer,
    layers: tuple[str, str],
    widths: tuple[int, int],
    heads: int,
    in_ids: np.ndarray | None,
    rows: tuple[int, int],
) -> HeadUnits:
    """Whole heads of the fused projection ``layers[0]`` (``widths[0]`` channels: q, k and v of every
    head, a head's channels joined) read by ``layers[1]`` (``widths[1]`` outputs); ``rows``: the rows
    through each projection and through the attention products (q.kT and weights.v)."""
    (qkv, out), (qkv_width, out_width), (tokens, product_rows) = layers, widths, rows
    per_head = tracer.source_ids(qkv, qkv_width).reshape(3, heads, -1)
    for head in range(heads):
        tracer.ids.union_arrays(per_head[0, head, :1], per_head[:, head, :].reshape(-1))
    values = per_head[2].reshape(-1).copy()
    out_ids = tracer.source_ids(out, out_width)
    q_and_v = np.concatenate([per_head[0].reshape(-1), values])
    name = qkv.rsplit(".", 1)[0]
    uses = [
        LayerUse(qkv, "linear", in_ids, per_head.reshape(-1).copy(), tokens),
        LayerUse(f"{name}:products", "product", q_and_v, None, product_rows),
        LayerUse(out, "linear", values, out_ids, tokens),
    ]
    return HeadUnits(uses, per_head[0, :, 0].copy(), values, out_ids)


def is_timm_attention(module: nn.Module) -> bool:
    """timm's ``Attention`` (qkv Linear, heads by reshape, SDPA or softmax, proj Linear), by name:
    timm is an optional dependency."""
    kind = type(module)
    return kind.__name__ == "Attention" and kind.__module__.startswith("timm.")


def _is_standard_timm_attention(attention: nn.Module) -> bool:
    """timm.layers.attention.Attention itself, or a subclass keeping its forward: the layout traced
    below. Many timm models define their own class named Attention (LeViT's, with a norm in its qkv
    layer; TNT's, with separate qk and v layers; BEiT's, with per-head position biases)."""
    standard = getattr(sys.modules.get("timm.layers.attention"), "Attention", None)
    return (
        isinstance(standard, type)
        and isinstance(attention, standard)
        and type(attention).forward is standard.forward
        and all(isinstance(getattr(attention, layer, None), nn.Linear) for layer in ("qkv", "proj"))
    )


def _timm_unsupported(attention: nn.Module, node: fx.Node) -> str | None:
    if not _is_standard_timm_attention(attention):
        return f"not timm's standard attention layer, {type(attention).__module__}"
    if getattr(attention, "gate", None) is not None:
        return "gated"
    if not isinstance(getattr(attention, "norm", None), nn.Identity):
        return "a norm over all heads"
    if any(_given(node.kwargs.get(k)) for k in ("attn_mask", "is_causal")) or len(node.args) > 1:
        return "masks"
    shape = _shape(node.args[0]) if node.args else None
    if shape is None or len(shape) != 3:
        return "input is not (batch, tokens, width)"
    return None


def trace_timm_attention(tracer: ChannelTracer, node: fx.Node, name: str, attention: nn.Module):
    """timm's Attention: whole heads of ``qkv`` and ``proj``; ``num_heads`` and ``attn_dim`` follow."""
    reason = _timm_unsupported(attention, node)
    if reason is not None:
        reason = f"attention layer {name} ({type(attention).__name__}: {reason})"
        for layer in ("qkv", "proj"):  # its heads show up as kept, and why
            linear = getattr(attention, layer, None)
            if isinstance(linear, nn.Linear):
                tracer.ids.block(tracer.source_ids(f"{name}.{layer}", linear.out_features), reason)
        return tracer.opaque(node, reason)
    _, length, width = _shape(node.args[0])
    in_ids = tracer.channel_vector(node, tracer.value(node.args[0]), 2, width)
    heads = attention.num_heads
    units = fused_qkv_heads(
        tracer,
        (f"{name}.qkv", f"{name}.proj"),
        (3 * heads * attention.head_dim, attention.proj.out_features),
        heads,
        in_ids,
        (length, length**2),
    )
    for use in units.uses:
        tracer.record(use)
    tracer.graph.head_layers.add(f"{name}.qkv")
    tracer.graph.widths.append(WidthAttribute(name, "num_heads", units.head_ids))
    tracer.graph.widths.append(WidthAttribute(name, "attn_dim", units.values))
    return channel_labels(units.out_ids, 3, 2)


def is_swin_attention(module: nn.Module) -> bool:
    """torchvision's Swin window attention, v1 and v2 (pruned or not)."""
    return type(module) in (
        ShiftedWindowAttention,
        ShiftedWindowAttentionV2,
        PrunedShiftedWindowAttention,
        PrunedShiftedWindowAttentionV2,
    )


def trace_swin_attention(tracer: ChannelTracer, node: fx.Node, name: str, attention: nn.Module):
    """Whole heads of qkv, proj and the relative position bias table; ``num_heads`` follows."""
    shape = _shape(node.args[0]) if len(node.args) == 1 and not node.kwargs else None
    if shape is None or len(shape) != 4:
        return _blocked(tracer, node, name, attention, "input is not (batch, height, width, width)")
    _, height, width, channels = shape
    window = list(attention.window_size)
    tokens = (height + (-height) % window[0]) * (width + (-width) % window[1])
    in_ids = tracer.channel_vector(node, tracer.value(node.args[0]), 3, channels)
    units = fused_qkv_heads(
        tracer,
        (f"{name}.qkv", f"{name}.proj"),
        (attention.qkv.out_features, attention.proj.out_features),
        attention.num_heads,
        in_ids,
        (tokens, tokens * window[0] * window[1]),
    )
    uses, head_ids = list(units.uses), units.head_ids
    if isinstance(attention, ShiftedWindowAttentionV2):
        uses += _bias_mlp_uses(tracer, name, attention, head_ids)
        per_head_tensor = TensorSlice(f"{name}.logit_scale", 0, head_ids)
    else:
        per_head_tensor = TensorSlice(f"{name}.relative_position_bias_table", 1, head_ids)  # a column a head
    if _base_macs(tracer, uses) != int(node.meta.get("macs", -1)):
        return _blocked(tracer, node, name, attention, "its MACs are not those of plain window attention")
    for use in uses:
        tracer.record(use)
    tracer.graph.head_layers.add(f"{name}.qkv")
    tracer.graph.widths.append(WidthAttribute(name, "num_heads", head_ids))
    tracer.graph.tensor_slices.append(per_head_tensor)
    return channel_labels(units.out_ids, 4, 3)


def _bias_mlp_uses(tracer: ChannelTracer, name: str, attention: nn.Module, head_ids: np.ndarray) -> list:
    """Swin v2's position-bias MLP: its last layer has one output per head, removed with the head."""
    first, last = attention.cpb_mlp[0], attention.cpb_mlp[2]
    entries = int(np.prod(attention.relative_coords_table.shape[1:-1]))
    out_ids = tracer.source_ids(f"{name}.cpb_mlp.2", last.out_features)
    tracer.ids.union_arrays(out_ids, head_ids)
    return [
        LayerUse(f"{name}.cpb_mlp.0", "fixed", None, None, entries * first.in_features * first.out_features),
        LayerUse(f"{name}.cpb_mlp.2", "linear", None, out_ids, entries),
    ]


def _base_macs(tracer: ChannelTracer, uses: list[LayerUse]) -> int:
    total = 0
    for use in uses:
        if use.role == "fixed":
            total += use.macs_factor
            continue
        count = len(use.in_ids) if use.in_ids is not None else input_width(tracer.modules[use.module])
        total += use.macs_factor * count * (len(use.out_ids) if use.out_ids is not None else 1)
    return total


def _blocked(tracer: ChannelTracer, node: fx.Node, name: str, attention: nn.Module, why: str):
    reason = f"attention layer {name} ({type(attention).__name__}: {why})"
    for layer in (f"{name}.{part}" for part in ("qkv", "proj", "cpb_mlp.2", "to_qkv", "merge")):
        module = tracer.modules.get(layer)
        if module is not None:
            tracer.ids.block(tracer.source_ids(layer, module.out_features), reason)
    return tracer.opaque(node, reason)


def is_maxvit_attention(module: nn.Module) -> bool:
    """torchvision's MaxViT attention (pruned or not); a subclass with its own forward is not it."""
    return type(module) in (RelativePositionalMultiHeadAttention, PrunedRelativePositionalMultiHeadAttention)


def trace_maxvit_attention(tracer: ChannelTracer, node: fx.Node, name: str, attention: nn.Module):
    """MaxViT's attention over (batch, partitions, tokens, width): whole heads of ``to_qkv`` and
    ``merge`` and columns of the relative position bias table; ``n_heads`` follows, ``head_dim`` and
    ``scale_factor`` (the unpruned width's, a constant) stay."""
    shape = _shape(node.args[0]) if len(node.args) == 1 and not node.kwargs else None
    if shape is None or len(shape) != 4:
        return _blocked(tracer, node, name, attention, "input is not (batch, partitions, tokens, width)")
    _, partitions, tokens, channels = shape
    in_ids = tracer.channel_vector(node, tracer.value(node.args[0]), 3, channels)
    units = fused_qkv_heads(
        tracer,
        (f"{name}.to_qkv", f"{name}.merge"),
        (attention.to_qkv.out_features, attention.merge.out_features),
        attention.n_heads,
        in_ids,
        (partitions * tokens, partitions * tokens * tokens),
    )
    if _base_macs(tracer, units.uses) != int(node.meta.get("macs", -1)):
        return _blocked(tracer, node, name, attention, "its MACs are not those of plain partition attention")
    for use in units.uses:
        tracer.record(use)
    tracer.graph.head_layers.add(f"{name}.to_qkv")
    tracer.graph.widths.append(WidthAttribute(name, "n_heads", units.head_ids))
    tracer.graph.tensor_slices.append(TensorSlice(f"{name}.relative_position_bias_table", 1, units.head_ids))
    return channel_labels(units.out_ids, 4, 3)


def attention_tracer(module: nn.Module):
    """The function that traces ``module`` as one attention layer, or None when it is not one."""
    if isinstance(module, nn.MultiheadAttention):
        return trace_multihead
    if is_timm_attention(module):
        return trace_timm_attention
    if is_swin_attention(module):
        return trace_swin_attention
    if is_maxvit_attention(module):
        return trace_maxvit_attention
    return None


def is_attention_leaf(module: nn.Module) -> bool:
    """Whether tracing keeps ``module`` as one call, traced by :func:`attention_tracer`."""
    return attention_tracer(module) is not None
