"""Dependency groups: the layers whose channels must be removed together, and which of them may be.

A group collects the output channels of every conv/linear layer that are joined
(through residual adds, multiplications, chunk constraints...). Its *units* are
the roots of those joined channels: removing a unit removes one channel (or a
few joined ones) from every member, and the matching positions from every BN,
depthwise conv and consumer downstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from torchslim.errors import PruningError

from .channel_graph import ChannelGraph, LayerUse


@dataclass
class Group:
    index: int
    sources: list[str]  # conv/linear layers whose output channels form the group
    units: np.ndarray  # root ids, one per removable unit
    members: dict[str, list[str]] = field(default_factory=dict)  # role -> layer names
    prunable: bool = True
    reason: str = ""
    matched: list[str] = field(default_factory=list)  # parameter names that selected the group
    kind: str = "conv channels"  # what the channels are: see group_kind

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def name(self) -> str:
        return self.sources[0] if len(self.sources) == 1 else f"{self.sources[0]}+{len(self.sources) - 1}"

    def describe(self) -> str:
        """One readable paragraph: layers, axis and channel count."""
        state = "prunable" if self.prunable else f"kept: {self.reason}"
        lines = [f"group {self.index}: {self.kind} ({self.size} units, {state})"]
        lines.append(f"  out channels (axis 0) of: {', '.join(self.sources)}")
        for role, label in (
            ("depthwise", "depthwise (axis 0, groups)"),
            ("norm", "batch norm"),
            ("consumer", "in channels (axis 1) of"),
        ):
            if self.members.get(role):
                lines.append(f"  {label}: {', '.join(self.members[role])}")
        return "\n".join(lines)


@dataclass
class GroupSet:
    """All groups of a traced model plus lookups from channel ids to units."""

    graph: ChannelGraph
    groups: list[Group]
    roots: np.ndarray  # root of every raw id
    group_of_root: np.ndarray  # root id -> group index (or -1)
    unit_of_root: np.ndarray  # root id -> unit index within its group (or -1)

    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def skipped(self) -> list[Group]:
        return [g for g in self.groups if not g.prunable]

    def positions(self, ids: np.ndarray, group: Group) -> tuple[np.ndarray, np.ndarray]:
        """(positions, unit indices) of the channel ids that belong to ``group``."""
        roots = self.roots[ids]
        hits = np.nonzero(self.group_of_root[roots] == group.index)[0]
        return hits, self.unit_of_root[roots[hits]]

    def consumers(self, group: Group) -> Iterator[GroupInput]:
        """Every call of a conv / linear layer that reads some of ``group``'s channels, in the order
        they run (a layer called twice appears twice), with the input positions that hold them."""
        for use in self.graph.consumers():
            positions, units = self.positions(use.in_ids, group)
            if len(positions):
                yield GroupInput(use, positions, units)

    def kept(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Which of the channel ``ids`` a removal ``mask`` (over roots) keeps."""
        return ~mask[self.roots[ids]]


@dataclass(frozen=True)
class GroupInput:
    """Where one layer call reads a group's channels: input ``positions`` and the group unit of each."""

    use: LayerUse
    positions: np.ndarray
    units: np.ndarray

    @property
    def module(self) -> str:
        return self.use.module


def build_groups(graph: ChannelGraph) -> GroupSet:
    """The channel groups of a traced model: sources that share a channel root form one group."""
    roots = graph.ids.roots()
    blocked = graph.ids.blocked_roots(roots)
    # Join sources that share a root: they form one group.
    source_names = list(graph.sources)
    owner: dict[int, int] = {}
    parent = list(range(len(source_names)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for index, name in enumerate(source_names):
        for root in np.unique(roots[graph.sources[name]]):
            other = owner.setdefault(int(root), index)
            if other != index:
                parent[find(index)] = find(other)
    clusters: dict[int, list[int]] = {}
    for index in range(len(source_names)):
        clusters.setdefault(find(index), []).append(index)

    group_of_root = np.full(len(roots), -1, dtype=np.int64)
    unit_of_root = np.full(len(roots), -1, dtype=np.int64)
    groups: list[Group] = []
    for members in sorted(clusters.values()):
        names = [source_names[i] for i in members]
        units = np.unique(np.concatenate([roots[graph.sources[n]] for n in names]))
        group = Group(len(groups), names, units)
        group_of_root[units] = group.index
        unit_of_root[units] = np.arange(len(units))
        reasons = [blocked[int(u)] for u in units if int(u) in blocked]
        if reasons:
            group.prunable, group.reason = False, reasons[0]
        elif len(units) < 2:
            group.prunable, group.reason = False, "a single channel unit"
        groups.append(group)
    group_set = GroupSet(graph, groups, roots, group_of_root, unit_of_root)
    _collect_members(group_set)
    for group in groups:
        group.kind = group_kind(group_set, group)
    return group_set


def group_kind(group_set: GroupSet, group: Group) -> str:
    """What a group's units are: "heads" (of attention layers), "embedding" (a transformer's
    residual stream: several layers writing it, layer norms or model tensors joined to it),
    "mlp hidden" (one linear layer's outputs), "linear" or "conv channels"."""
    graph = group_set.graph
    roles = {use.module: use.role for use in graph.uses if use.out_ids is not None}
    source_roles = {roles.get(name) for name in group.sources}
    if graph.head_layers.intersection(group.sources):
        return "heads"
    joined = [t.ids for t in graph.tensor_slices] + [w.ids for w in graph.widths]
    units = set(group.units.tolist())
    touches = any(units.intersection(group_set.roots[ids].tolist()) for ids in joined)
    layer_norms = any(u.role == "layer_norm" for u in graph.uses if u.module in group.members.get("norm", []))
    if touches or (len(group.sources) > 1 and layer_norms):
        return "embedding"
    if source_roles == {"linear"}:
        return "mlp hidden" if len(group.sources) == 1 else "linear"
    return "conv channels"


def _collect_members(group_set: GroupSet) -> None:
    """Name in each group the layers that read its channels, by role (consumer, depthwise, norm)."""
    for use in group_set.graph.uses:
        role = _MEMBER_ROLES.get(use.role)
        if use.in_ids is None or role is None:
            continue
        for group_index in np.unique(group_set.group_of_root[group_set.roots[use.in_ids]]):
            if group_index >= 0:
                names = group_set.groups[group_index].members.setdefault(role, [])
                if use.module not in names:
                    names.append(use.module)


# A layer use's role -> the member role of the layer in the groups whose channels it reads.
_MEMBER_ROLES = {
    "conv": "consumer",
    "linear": "consumer",
    "attention": "consumer",
    "depthwise": "depthwise",
    "norm": "norm",
    "layer_norm": "norm",
}


def matching_params(model: nn.Module, pattern: re.Pattern, aliases: dict[str, str]) -> list[str]:
    """Parameter names that ``pattern`` matches (``re.match``) by PyTorch name or by seed alias."""
    names = [n for n, _ in model.named_parameters()]
    return [n for n in names if pattern.match(n) or (n in aliases and pattern.match(aliases[n]))]


def param_name_sample(model: nn.Module, aliases: dict[str, str], count: int = 6) -> str:
    """The first parameter names, with their seed aliases, for a message that the regex matched none."""
    names = [n for n, _ in model.named_parameters()][:count]
    return ", ".join(f"{n} ({aliases[n]})" if n in aliases else n for n in names)


def select_groups(
    group_set: GroupSet,
    model: nn.Module,
    pruned_params: str | None,
    aliases: dict[str, str] | None = None,
) -> None:
    """Keep prunable only the groups one of whose defining weights matches ``pruned_params``.

    The regex is matched (``re.match``) against each parameter's PyTorch name and
    its seed alias. A group's defining weights are its sources' and its depthwise
    convs' weights. A regex that matches no parameter at all is an error.
    """
    if pruned_params is None:
        return
    try:
        pattern = re.compile(pruned_params)
    except re.error as error:
        raise PruningError(f"pruned_params {pruned_params!r} is not a valid regex: {error}") from None
    aliases = aliases or {}
    matched = set(matching_params(model, pattern, aliases))
    if not matched:
        raise PruningError(
            f"pruned_params {pruned_params!r} matches no parameter; names look like: "
            f"{param_name_sample(model, aliases)}, ..."
        )
    for group in group_set.groups:
        defining = group.sources + group.members.get("depthwise", [])
        group.matched = [f"{layer}.weight" for layer in defining if f"{layer}.weight" in matched]
        if group.prunable and not group.matched:
            group.prunable, group.reason = False, "not selected by pruned_params"
