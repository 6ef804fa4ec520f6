"""nn.MultiheadAttention whose heads may be fewer than embed_dim / head_dim: what head pruning leaves.

PyTorch's own forward requires ``num_heads * head_dim == embed_dim`` (the width of the residual
stream it reads and writes). Pruning whole heads, or the embedding, breaks that, so a pruned
attention layer becomes this subclass: the same parameters and attributes (``in_proj_weight``
of shape ``(3 * num_heads * head_dim, embed_dim)``, ``out_proj`` from ``num_heads * head_dim``
to ``embed_dim``), and a forward written with plain ops that reads the widths from them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """Self- or cross-attention with ``num_heads`` heads of ``head_dim`` between ``embed_dim`` widths."""

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.head_dim

    def forward(  # noqa: PLR0913 - nn.MultiheadAttention's signature
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._heads(query, key, value)
        scores = (q @ k.transpose(-2, -1)) * (self.head_dim**-0.5)
        scores = self._masked(scores, key_padding_mask, attn_mask, is_causal)
        weights = F.dropout(scores.softmax(dim=-1), p=self.dropout, training=self.training)
        batch, _, length, _ = q.shape
        output = self.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, self.inner_dim))
        if not self.batch_first:
            output = output.transpose(0, 1)
        if not need_weights:
            return output, None
        return output, weights.mean(dim=1) if average_attn_weights else weights

    def _heads(self, query, key, value) -> list[torch.Tensor]:
        """q, k and v as (batch, heads, length, head_dim)."""
        weights = self.in_proj_weight.chunk(3)
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        heads = []
        for tensor, weight, bias in zip((query, key, value), weights, biases, strict=True):
            projected = F.linear(tensor, weight, bias)
            batch, length, _ = projected.shape
            heads.append(projected.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2))
        return heads

    def _masked(self, scores, key_padding_mask, attn_mask, is_causal: bool) -> torch.Tensor:
        """The scores with the masks nn.MultiheadAttention accepts applied (True / -inf = not attended)."""
        batch, heads, length, source = scores.shape
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(length, source, dtype=torch.bool, device=scores.device).triu(1)
        for mask in (attn_mask, key_padding_mask):
            if mask is None:
                continue
            if mask is key_padding_mask:
                mask = mask[:, None, None, :]
            elif mask.dim() == 3:
                mask = mask.reshape(batch, heads, length, source)
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(mask, float("-inf"))
            else:
                scores = scores + mask
        return scores


def uses_pruned_forward(module: nn.Module) -> None:
    """Give an attention layer the forward that reads its widths from its weights, in place
    (its parameters are kept): nn.MultiheadAttention, torchvision's Swin (v1, v2) window attention and
    MaxViT's attention."""
    pruned = _PRUNED_FORWARD.get(type(module))
    if pruned is not None:
        module.__class__ = pruned


class PrunedShiftedWindowAttention(ShiftedWindowAttention):
    """torchvision's Swin (v1) window attention with ``num_heads`` heads of ``head_dim`` between
    widths that may differ from ``num_heads * head_dim`` (torchvision's forward ties them)."""

    @property
    def head_dim(self) -> int:
        return self.qkv.out_features // (3 * self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        window = list(self.window_size)
        padded = F.pad(x, (0, 0, 0, (-width) % window[1], 0, (-height) % window[0]))
        _, pad_h, pad_w, _ = padded.shape
        shift = [s if w < p else 0 for s, w, p in zip(self.shift_size, window, (pad_h, pad_w), strict=True)]
        if sum(shift) > 0:
            padded = torch.roll(padded, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        tokens = _windows(padded, window)  # (batch * windows, tokens per window, width)
        qkv = self._qkv(tokens).reshape(tokens.size(0), tokens.size(1), 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        scores = self._scores(q, k) + self.get_relative_position_bias()
        if sum(shift) > 0:
            mask = _shift_mask(pad_h, pad_w, window, shift, scores.device, scores.dtype)
            scores = (scores.view(batch, -1, *scores.shape[1:]) + mask[None, :, None]).flatten(0, 1)
        weights = F.dropout(scores.softmax(dim=-1), p=self.attention_dropout, training=self.training)
        out = (weights @ v).transpose(1, 2).reshape(tokens.size(0), tokens.size(1), -1)
        out = F.dropout(self.proj(out), p=self.dropout, training=self.training)
        out = _unwindows(out, batch, pad_h, pad_w, window)
        if sum(shift) > 0:
            out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
        return out[:, :height, :width, :].contiguous()

    def _qkv(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.qkv(tokens)

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q * self.head_dim**-0.5) @ k.transpose(-2, -1)


class PrunedShiftedWindowAttentionV2(PrunedShiftedWindowAttention, ShiftedWindowAttentionV2):
    """Swin v2's window attention (cosine scores with a per-head logit scale, the key bias held at
    zero, a bias MLP with one output per head) with widths read from its weights."""

    def _qkv(self, tokens: torch.Tensor) -> torch.Tensor:
        bias = self.qkv.bias
        if bias is not None:
            bias = torch.cat(
                [
                    bias[: len(bias) // 3],
                    torch.zeros_like(bias[len(bias) // 3 : -len(bias) // 3]),
                    bias[-len(bias) // 3 :],
                ]
            )
        return F.linear(tokens, self.qkv.weight, bias)

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * scale


class PrunedRelativePositionalMultiHeadAttention(RelativePositionalMultiHeadAttention):
    """MaxViT's attention with ``n_heads`` heads of ``head_dim`` between widths that may differ from
    ``n_heads * head_dim`` (torchvision's forward ties them). ``scale_factor`` is the unpruned
    layer's, kept: pruning removes heads and channels, it does not rescale the ones kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, partitions, tokens, _ = x.shape
        q, k, v = (
            t.reshape(batch, partitions, tokens, self.n_heads, self.head_dim).transpose(2, 3)
            for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        scores = q @ (k * self.scale_factor).transpose(-2, -1) + self.get_relative_positional_bias()
        out = (scores.softmax(dim=-1) @ v).transpose(2, 3)
        return self.merge(out.reshape(batch, partitions, tokens, self.n_heads * self.head_dim))


def _windows(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window[0], window[0], width // window[1], window[1], channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], channels)


def _unwindows(x: torch.Tensor, batch: int, height: int, width: int, window: list[int]) -> torch.Tensor:
    x = x.view(batch, height // window[0], width // window[1], window[0], window[1], -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, -1)


def _shift_mask(height: int, width: int, window: list[int], shift: list[int], device, dtype) -> torch.Tensor:
    """-100 between tokens of a window that came from different regions of the rolled map."""
    regions = torch.zeros(height, width, device=device, dtype=dtype)
    label = 0
    for rows in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for cols in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            regions[rows[0] : rows[1], cols[0] : cols[1]] = label
            label += 1
    regions = _windows(regions[None, :, :, None], window)[..., 0]  # (windows, tokens)
    different = regions.unsqueeze(1) - regions.unsqueeze(2) != 0
    return torch.zeros_like(different, dtype=dtype).masked_fill(different, -100.0)


# Each attention layer's type -> the subclass whose forward reads its widths from its weights.
_PRUNED_FORWARD = {
    nn.MultiheadAttention: PrunedMultiheadAttention,
    ShiftedWindowAttention: PrunedShiftedWindowAttention,
    ShiftedWindowAttentionV2: PrunedShiftedWindowAttentionV2,
    RelativePositionalMultiHeadAttention: PrunedRelativePositionalMultiHeadAttention,
}
