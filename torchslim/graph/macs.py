"""Counting multiply-accumulates at the ATen level: convolutions and matrix products, nothing else.

Every way a model multiplies matrices (``nn.Linear``, ``F.linear``, ``@``, ``bmm``, ``einsum``,
``nn.MultiheadAttention``, ``F.scaled_dot_product_attention``) reaches one of a few ATen ops, so
counting those ops counts them all alike. Norms, activations, softmax, pooling, element-wise
arithmetic and bias additions are not counted. Works on meta and fake tensors (shapes only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _numel(shape) -> int:
    total = 1
    for size in shape:
        total *= int(size)
    return total


def _mm(args, _out) -> int:
    (m, k), n = args[0].shape, args[1].shape[-1]
    return int(m) * int(k) * int(n)


def _addmm(args, out) -> int:
    return _mm(args[1:], out)


def _bmm(args, _out) -> int:
    (b, m, k), n = args[0].shape, args[1].shape[-1]
    return int(b) * int(m) * int(k) * int(n)


def _baddbmm(args, out) -> int:
    return _bmm(args[1:], out)


def _mv(args, _out) -> int:
    return _numel(args[0].shape)


def _convolution(args, out) -> int:
    """Each output element costs (in_channels / groups) x kernel area; transposed: each input element."""
    weight, transposed = args[1], bool(args[6]) if len(args) > 6 else False
    per_element = _numel(weight.shape[1:])
    return _numel(args[0].shape if transposed else out.shape) * per_element


def _attention(args, _out) -> int:
    """q.kT and weights.v: batch x heads x Lq x Lk x (E_qk + E_v)."""
    query, key, value = args[0], args[1], args[2]
    *batch, lq, e_qk = query.shape
    lk, e_v = key.shape[-2], value.shape[-1]
    return _numel(batch) * int(lq) * int(lk) * (int(e_qk) + int(e_v))


def _table() -> dict[object, Callable]:
    table: dict[object, Callable] = {
        aten.mm.default: _mm,
        aten.addmm.default: _addmm,
        aten.bmm.default: _bmm,
        aten.baddbmm.default: _baddbmm,
        aten.mv.default: _mv,
        aten.convolution.default: _convolution,
        aten._convolution.default: _convolution,
    }
    for name in (
        "scaled_dot_product_attention",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    ):
        op = getattr(aten, name, None)
        if op is not None:
            table[op.default] = _attention
    return table


COUNTED_OPS = _table()


class MacCounter(TorchDispatchMode):
    """Adds up the MACs of every counted op that runs inside it; ``on_op(macs)`` sees each one."""

    def __init__(self, on_op: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.total = 0
        self.on_op = on_op

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        counter = COUNTED_OPS.get(func)
        if counter is not None:
            first = out[0] if isinstance(out, (tuple, list)) else out
            macs = counter(args, first)
            self.total += macs
            if self.on_op is not None:
                self.on_op(macs)
        return out


@contextlib.contextmanager
def counting_macs(on_op: Callable[[int], None] | None = None) -> Iterator[MacCounter]:
    """Count MACs inside the block; nn.MultiheadAttention's fused inference path is switched off
    (it is one op that hides its matrix products, and has no meta kernel)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with MacCounter(on_op) as counter:
            yield counter
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
