"""Channel labels: every channel a layer produces gets a global id; ids that must go together are joined.

A traced tensor of shape ``(N, C, H, W)`` carries a label array of shape
``(C, 1, 1)`` (the batch axis is dropped; axes along which labels do not change
are kept at size 1 and broadcast). Element-wise ops between two tensors join the
ids they combine position by position, in a union-find; two channels with the
same root must be removed together.
"""

from __future__ import annotations

import numpy as np


class ChannelIds:
    """A growable union-find over channel ids, with a reason for every id that may not be removed."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._blocked: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._parent)

    def new(self, count: int) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, item: int) -> int:
        parent = self._parent
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:
            parent[item], item = root, parent[item]
        return root

    def union_arrays(self, first: np.ndarray, second: np.ndarray) -> None:
        """Join ``first[i]`` with ``second[i]`` for every position (arrays broadcast; compressed first,
        so that a label array broadcast over many tokens costs what its channels cost)."""
        first, second = np.broadcast_arrays(compress(first), compress(second))
        pairs = np.unique(np.stack([first.ravel(), second.ravel()], axis=1), axis=0)
        for a, b in pairs:
            if a != b:
                root_a, root_b = self.find(int(a)), self.find(int(b))
                if root_a != root_b:
                    self._parent[max(root_a, root_b)] = min(root_a, root_b)

    def block(self, ids: np.ndarray, reason: str) -> None:
        """Mark ``ids`` as not removable, remembering the first reason given."""
        for item in np.unique(compress(ids)):
            self._blocked.setdefault(int(item), reason)

    def roots(self) -> np.ndarray:
        """The root of every id, as one array (fully compressed)."""
        parent = np.asarray(self._parent, dtype=np.int64)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand

    def blocked_roots(self, roots: np.ndarray) -> dict[int, str]:
        """Root id -> reason, for every root some of whose ids are blocked."""
        result: dict[int, str] = {}
        for item, reason in self._blocked.items():
            result.setdefault(int(roots[item]), reason)
        return result


def channel_labels(ids: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Labels of a tensor with ``ndim`` dims whose ``axis`` (batch included) holds ``ids``."""
    shape = [1] * (ndim - 1)
    shape[axis - 1] = len(ids)
    return ids.reshape(shape)


def compress(labels: np.ndarray) -> np.ndarray:
    """Shrink every axis along which the labels do not change back to size 1."""
    for axis in range(labels.ndim):
        if labels.shape[axis] > 1:
            first = np.take(labels, [0], axis=axis)
            if np.array_equal(np.broadcast_to(first, labels.shape), labels):
                labels = first
    return labels


def vector_along(labels: np.ndarray, axis: int, size: int) -> np.ndarray | None:
    """The ``size`` labels along label ``axis`` (batch excluded); None when they also vary on other axes."""
    labels = compress(labels)
    if any(labels.shape[a] > 1 for a in range(labels.ndim) if a != axis):
        return None
    return np.broadcast_to(labels.reshape(-1), (size,)).copy()
