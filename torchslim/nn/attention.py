"""nn.MultiheadAttention whose heads may be fewer than embed_dim / head_dim: what head pruning leaves.

PyTorch's own forward requires ``num_heads * head_dim == embed_dim`` (the width of the residual
stream it reads and writes). Pruning whole heads, or the embedding, breaks that, so a pruned
attention layer becomes this subclass: the same parameters and attributes (``in_proj_weight``
of shape ``(3 * num_heads * head_dim, embed_dim)``, ``out_proj`` from ``num_heads * head_dim``
to ``embed_dim``), and a forward written with plain ops that reads the widths from them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def uses_pruned_forward(module: nn.MultiheadAttention) -> None:
    """Make ``module`` a :class:`PrunedMultiheadAttention` in place (its parameters are kept)."""
    if isinstance(module, nn.MultiheadAttention) and not isinstance(module, PrunedMultiheadAttention):
        module.__class__ = PrunedMultiheadAttention
