"""Channel ids: joins and blocks of label arrays broadcast over many positions (tokens, space) are
those of their channels, whatever the broadcast size."""

from __future__ import annotations

import numpy as np

from torchslim.graph.labels import ChannelIds, channel_labels


def test_a_join_of_broadcast_label_arrays_is_the_join_of_their_channels():
    ids = ChannelIds()
    a, b = ids.new(4), ids.new(4)
    tokens = np.broadcast_to(channel_labels(a, 3, 2), (100_000, 4))  # 100k tokens of 4 channels
    ids.union_arrays(tokens, b[::-1].reshape(1, 4))
    roots = ids.roots()
    assert [roots[x] for x in b[::-1]] == [roots[x] for x in a]
    assert len(set(roots.tolist())) == 4


def test_a_join_along_an_axis_that_varies_on_both_sides_still_pairs_every_position():
    ids = ChannelIds()
    a, b = ids.new(6), ids.new(6)
    ids.union_arrays(
        np.broadcast_to(a.reshape(2, 3), (50, 2, 3)), np.broadcast_to(b.reshape(2, 3), (50, 2, 3))
    )
    roots = ids.roots()
    assert all(roots[x] == roots[y] for x, y in zip(a, b, strict=True))
    assert len(set(roots.tolist())) == 6


def test_blocking_a_broadcast_array_blocks_each_channel_once_with_the_first_reason():
    ids = ChannelIds()
    a = ids.new(3)
    ids.block(np.broadcast_to(a.reshape(1, 3), (10_000, 3)), "first")
    ids.block(a[:1], "second")
    assert ids.blocked_roots(ids.roots()) == {0: "first", 1: "first", 2: "first"}
