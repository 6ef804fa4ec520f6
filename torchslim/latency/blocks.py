"""Which channel counts a runtime runs fast: latency staircases and their blocks."""

from __future__ import annotations

import numpy as np

from torchslim.graph import GroupSet
from torchslim.latency.layers import ConvConfig
from torchslim.latency.table import LatencyTable

BLOCK_CANDIDATES = (1, 4, 8, 16, 32)

# Probe layers whose latency staircase reveals the runtime's channel block, per layer kind:
# only one width varies, so the cost should be linear in that width rounded up to the block.
_PROBES = {
    "conv": lambda c: ConvConfig(64, c, 1, 1, 1, 56, 56),
    "depthwise": lambda c: ConvConfig(c, c, 3, 1, c, 56, 56),
    "linear": lambda c: ConvConfig(c, 4096, 1, 1, 1, 1, 1, batch=8, linear=True),
}


def block_from_latencies(latencies: dict[int, float]) -> int:
    """The channel block B that best explains ``latencies`` (count -> ms) as ``a + b * ceil(count / B) * B``.

    A runtime that pads channels to its vector block shows a staircase; a
    least-squares fit per candidate block picks the block whose staircase fits
    best (ties go to the smaller block). Returns 1 for a smooth curve.
    """
    counts = np.asarray(sorted(latencies), dtype=np.float64)
    values = np.asarray([latencies[int(c)] for c in counts], dtype=np.float64)
    best_block, best_error = 1, float("inf")
    for block in BLOCK_CANDIDATES:
        padded = np.ceil(counts / block) * block
        design = np.stack([np.ones_like(padded), padded], axis=1)
        keep = np.ones(len(values), dtype=bool)
        for _ in range(3):  # trimmed least squares: a few disturbed samples must not bend the line
            coefficients, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
            residuals = np.abs(design @ coefficients - values)
            keep = residuals <= np.quantile(residuals, 0.8)
        error = float(np.mean(np.sort(residuals)[: max(1, int(0.8 * len(residuals)))]))  # trimmed mean
        if error < best_error * 0.9 - 1e-12:
            best_block, best_error = block, error
    return best_block


def detect_blocks(
    table: LatencyTable, low: int = 64, high: int = 160, probe_step: int = 4, passes: int = 3
) -> dict[str, int]:
    """The channel block each layer kind ("conv", "depthwise", "linear") runs fast at on ``table``'s runtime.

    Measured once and cached in the table: a probe layer's latency at every
    ``probe_step``-th width in [low, high], in ``passes`` interleaved passes
    (the fastest pass per width counts, which shrugs off a busy machine), is
    read as a staircase by :func:`block_from_latencies`.
    """
    blocks = {}
    for kind, make in _PROBES.items():
        counts = list(range(low, high + 1, probe_step))
        values = table.lookup_min([make(c) for c in counts], passes=passes)
        blocks[kind] = block_from_latencies(dict(zip(counts, values, strict=True)))
    return blocks


def group_blocks(group_set: GroupSet, blocks: dict[str, int]) -> dict[int, int]:
    """Per prunable group: the block its channel count should be a multiple of.

    A group's count is the output width of its source layers and the input width
    of its consumers and depthwise members, so the group takes the largest
    block of the layer kinds it touches (per-layer alignment, not one global
    round_to: a group feeding only a classifier may need none).
    """
    roles = {"consumer": None, "depthwise": "depthwise"}
    kinds_of_module = {}
    for use in group_set.graph.uses:
        if use.role in ("conv", "linear", "depthwise"):
            kinds_of_module[use.module] = use.role
    result = {}
    for group in group_set.prunable():
        kinds = {kinds_of_module.get(name, "conv") for name in group.sources}
        for role, kind in roles.items():
            for name in group.members.get(role, []):
                kinds.add(kind or kinds_of_module.get(name, "conv"))
        result[group.index] = max((blocks.get(k, 1) for k in kinds), default=1)
    return result


def allowed_counts(sizes: dict[int, int], block_of: dict[int, int]) -> dict[int, np.ndarray]:
    """Multiples of each group's block (at least one block), plus the full size."""
    allowed = {}
    for group, size in sizes.items():
        block = max(1, block_of.get(group, 1))
        values = list(range(block, size + 1, block)) or [size]
        allowed[group] = np.asarray(sorted(set(values) | {size}), dtype=np.int64)
    return allowed
